"""A Hydra launcher for sweeps: every point of a ``-m`` run in as few Flower simulations.

Hydra's own launcher runs a sweep's points one by one, each a fresh process with
a fresh Ray cluster (about half a minute of fixed cost per point). This one
first validates every point (a bad value stops the sweep before Ray starts),
then runs the points that the point store lacks back to back over the same
SuperNodes, each saved in the store as it finishes, and finally runs each
Hydra job as usual: the task function finds its point in the store and writes
its tables to the job's own output folder. ``conf/config.yaml`` selects it
(Hydra loads launchers from the ``hydra_plugins`` package only);
``hydra.launcher._target_=hydra._internal.core_plugins.basic_launcher.BasicLauncher``
restores Hydra's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from common.assets.devices import DeviceError, check_device
from common.run.points import PointStore
from common.run.settings import ConfigError, RunSettings, refuse_unused
from common.run.trackers import check_tracker, close_sweep, name_runs, run_label
from conf import override_keys, validated
from launch.errors import Refused, check_folder, refusing
from launch.simulation import SimulationFailed, check_cluster, check_resources, resources_of
from launch.sweeps import interrupted, point_store, run_unfinished

log = logging.getLogger(__name__)


def task_config(cfg: DictConfig) -> dict[str, Any]:
    """A job's config as the task function sees it: without Hydra's own node."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    return plain


class SweepLauncher(Launcher):
    """Validate every point, simulate the unfinished ones in batches, then run each job."""

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _job_configs(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[tuple[DictConfig, RunSettings]]:
        assert self.hydra_context is not None and self.config is not None
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            try:
                settings = validated(task_config(cfg))
            except ConfigError as exc:
                raise Refused(
                    f"error: sweep point #{idx} ({' '.join(overrides)}): {exc}", self._folder()
                ) from None
            jobs.append((cfg, settings))
        try:
            refuse_unused(
                [(override_keys(o), s) for o, (_, s) in zip(job_overrides, jobs, strict=True)]
            )
            stores = {s.sweep_store for _, s in jobs if s.sweep_store is not None}
            for store in sorted(stores):  # before any point is computed
                check_folder(
                    "sweep_store",
                    store,
                    "give a folder you can write, or sweep_store=null to keep no points",
                )
            for _, s in jobs[:1]:
                check_cluster(s.experiment.ray_address)
                check_tracker(s)
                check_resources(*resources_of(s))
            for device, precision in sorted({(s.device, s.latents.precision) for _, s in jobs}):
                check_device(device, precision)
        except (ConfigError, DeviceError) as exc:
            raise Refused(f"error: {exc}", self._folder()) from None
        return jobs

    def _folder(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir))

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = self._job_configs(job_overrides, initial_job_idx)
        store = point_store(jobs[0][1]) if jobs else None
        jobs, parent = self._tracked(jobs, job_overrides, store)
        failed = False
        if store is not None:
            with refusing(self._folder()):  # data, cache, memory: before the jobs write
                try:
                    run_unfinished(
                        store,
                        [settings for _, settings in jobs],
                        in_flight=jobs[0][1].sweep_in_flight,
                    )
                except SimulationFailed as exc:  # the jobs of the missing points report it too
                    failed = True
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                except KeyboardInterrupt:
                    close_sweep(jobs[0][1], parent, failed=True, interrupted=True)
                    sys.exit(interrupted(store, [settings for _, settings in jobs]))
                except BaseException:
                    close_sweep(jobs[0][1], parent, failed=True)
                    raise
        runs = []
        try:
            for cfg, _ in jobs:
                runs.append(
                    run_job(
                        hydra_context=self.hydra_context,
                        task_function=self.task_function,
                        config=cfg,
                        job_dir_key="hydra.sweep.dir",
                        job_subdir_key="hydra.sweep.subdir",
                    )
                )
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        except BaseException as exc:  # Ctrl-C, or a job's exit: the parent run is not left open
            stopped = isinstance(exc, KeyboardInterrupt) or (
                isinstance(exc, SystemExit) and exc.code == 130
            )
            close_sweep(jobs[0][1], parent, failed=True, interrupted=stopped)
            raise
        if jobs:
            failed = failed or any(run.status != JobStatus.COMPLETED for run in runs)
            close_sweep(jobs[0][1], parent, failed=failed)
        return runs

    def _tracked(
        self,
        jobs: list[tuple[DictConfig, RunSettings]],
        job_overrides: Sequence[Sequence[str]],
        store: PointStore | None,
    ) -> tuple[list[tuple[DictConfig, RunSettings]], str | None]:
        """Each point's tracked run named by its overrides, under the sweep's parent run
        (MLflow) or group (W&B) when some point is still to compute; the jobs' configs say
        the same (a job without a store runs from its config)."""
        assert self.config is not None
        if not jobs or jobs[0][1].logger.name == "none":
            return jobs, None
        todo = [s for _, s in jobs if store is None or not store.finished(s)]
        title = "sweep: " + run_label(self.config.hydra.overrides.task)
        named, parent = name_runs(
            [(o, s) for o, (_, s) in zip(job_overrides, jobs, strict=True)],
            title,
            sweep=[s for _, s in jobs] if todo else (),
        )
        for (cfg, _), settings in zip(jobs, named, strict=True):
            with open_dict(cfg):
                cfg.logger.run_name = settings.logger.run_name
                cfg.logger.parent = settings.logger.parent
        return [(cfg, s) for (cfg, _), s in zip(jobs, named, strict=True)], parent

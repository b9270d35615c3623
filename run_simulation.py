"""Run one experiment (or a Hydra sweep with -m) as a Flower simulation on Ray.

    python run_simulation.py                                   # the default run
    python run_simulation.py strategy=multi_link communication.channel_usage=2
    python run_simulation.py communication.channel_usage=1,2,4 seed=27,42 \\
        strategy=federated,multi_link -m                        # a sweep

The configuration is validated before Ray starts; the encoders, latents and
heads are built (or read from the cache) here, once, before the users start.
Each run writes results.parquet/csv, history.csv, failures.csv and
precoders.npz to its Hydra output folder and prints the per-user table and the
mean accuracy. A sweep (-m) runs all its points in as few Flower simulations as
possible and keeps each finished point in ``sweep_store``, so a sweep started
again redoes only what did not finish (``hydra_plugins/fedalign_sweep_launcher``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.environment import quiet

quiet()  # before flwr and ray are imported

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from common.run.reporting import failed_users, per_user_table, slot_table  # noqa: E402
from common.run.settings import ConfigError, refuse_unused  # noqa: E402
from common.run.trackers import check_tracker, name_runs  # noqa: E402
from conf import override_keys, validated  # noqa: E402
from launch.errors import (  # noqa: E402
    Refused,
    Untouched,
    check_output_folder,
    refusing,
    reported,
)
from launch.sweeps import point_store  # noqa: E402


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    with refusing(None if sweep else out_dir):  # nothing computed yet: a refusal changes nothing
        settings = validated(OmegaConf.to_container(cfg, resolve=True))
        if not sweep:  # a sweep's launcher checked every point, and named its tracked runs
            overrides = HydraConfig.get().overrides.task
            refuse_unused([(override_keys(overrides), settings)])
            settings = name_runs([(overrides, settings)], "")[0][0]
        check_tracker(settings)
        from common.assets.devices import check_device

        check_device(settings.device, settings.latents.precision)
        from launch.simulation import check_cluster, check_resources

        check_resources(
            settings.experiment.cpus_per_user,
            settings.experiment.ray_address,
            settings.experiment.gpus_per_user,
        )
        check_cluster(settings.experiment.ray_address)
        if settings.experiment.resume:  # refused now, not after Ray has started
            check_resumable(settings, out_dir, sweep)
    store = point_store(settings) if sweep else None
    if store is not None and store.finished(settings):  # run by the sweep launcher, or earlier
        outcome = store.load(settings)
        outcome.save(out_dir)
        print(f"point {store.path(settings).name}: {' '.join(HydraConfig.get().overrides.task)}")
    else:
        from launch.simulation import simulate, warm_assets

        with refusing(None if sweep else out_dir):
            warm_assets([settings])
        with reported():
            try:
                outcome = simulate(settings, out_dir=out_dir)
            except KeyboardInterrupt:
                sys.exit(interrupted(out_dir))
        if store is not None:
            store.save(settings, outcome)
    print(per_user_table(outcome.results))
    if len(outcome.tracking):
        print(slot_table(outcome.tracking))
    failed = failed_users(
        outcome.results,
        outcome.failures,
        settings.num_users,
        len(outcome.history),
        settings.experiment.max_failed_fraction,
    )
    if failed and not settings.experiment.allow_partial:
        account = "\n".join(
            f"  user {k} ({settings.users.models[k]}): {why}" for k, why in failed.items()
        )
        sys.exit(
            f"error: {len(failed)} of {settings.num_users} users failed permanently (the "
            f"tables in {out_dir} say which rounds):\n{account}\nset "
            "experiment.allow_partial=true to accept a partial run"
        )
    return float(outcome.results.accuracy.mean())


def interrupted(out_dir: Path) -> int:
    """Say what an interrupted run kept and how to continue it; the exit status."""
    from common.run.checkpoint import CHECKPOINT_FILE, Checkpoint

    kept = "nothing (no round had finished)"
    if (out_dir / CHECKPOINT_FILE).exists():
        checkpoint = Checkpoint.read(out_dir)
        done = f"rounds 1-{checkpoint.round}"
        if checkpoint.deployment:
            slot = checkpoint.deployment["slot"]
            done += " and the evaluation" + (f" and deployment slots 1-{slot}" if slot else "")
        overrides = " ".join(HydraConfig.get().overrides.task)
        kept = (
            f"the history and AP checkpoint of {done}; continue with:\n  python "
            f"run_simulation.py {overrides} experiment.resume=true hydra.run.dir={out_dir}"
        )
    elif (out_dir / "history.csv").exists():
        kept = "the history of the finished rounds (this method cannot resume)"
    print(f"interrupted: {out_dir} keeps {kept}", file=sys.stderr)
    return 130


def check_resumable(settings, out_dir: Path, sweep: bool) -> None:
    """``experiment.resume=true`` needs the output folder of an interrupted run of the same
    config (``hydra.run.dir=<that folder>``); a sweep resumes by itself."""
    from common.run.checkpoint import Checkpoint, CheckpointError

    if sweep:
        raise ConfigError(
            "config key 'experiment.resume' = true is invalid in a sweep (-m): a "
            "sweep started again skips its finished points by itself"
        )
    try:
        Checkpoint.read(out_dir).check_settings(settings, out_dir)
    except CheckpointError as exc:
        raise ConfigError(
            f"config key 'experiment.resume' = true: {exc} (give the interrupted "
            "run's folder as hydra.run.dir=<folder>)"
        ) from None


if __name__ == "__main__":
    untouched = Untouched.take(sys.argv[1:], f"{Path(__file__).stem}.log")
    try:
        check_output_folder(sys.argv[1:])
        main()
    except Refused as refused:
        untouched.restore(refused.folder)
        sys.exit(refused.code)

"""Run one experiment as a Flower simulation on the Ray backend.

The ServerApp writes the run's outcome to an output folder; :func:`simulate`
reads it back from there, so a simulation returns exactly what a deployed run
leaves on disk.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from clients.client_app import UserFactory, default_user, make_client_app
from common.run.reporting import show_progress
from common.run.results import PRECODERS_FILE, RunOutcome
from common.run.settings import RunSettings
from common.run.sources import ProblemSource
from launch.environment import SINGLE_THREAD_ENV, quiet
from server.server_app import make_server_app


class SimulationFailed(RuntimeError):
    """The ServerApp did not produce an outcome (its error was logged by Flower)."""


def _isolated_process() -> None:
    """Initializer of the fresh process that hosts one simulation."""
    from threadpoolctl import threadpool_limits

    os.environ.update(SINGLE_THREAD_ENV)  # inherited by the Ray workers started from here
    threadpool_limits(1)  # numpy is already imported in this process


def simulate(
    settings: RunSettings,
    source: ProblemSource | None = None,
    *,
    out_dir: str | Path | None = None,
    user_factory: UserFactory = default_user,
    isolated: bool = True,
) -> RunOutcome:
    """One user per simulated SuperNode, ``settings.cpus_per_user`` CPUs each.

    The outcome is written to ``out_dir`` (a temporary folder when not given)
    and returned. By default the simulation runs in a freshly spawned process:
    starting Ray a second time from a process that already holds many threads
    (a Hydra ``-m`` sweep, a benchmark) can deadlock, and a fresh process also
    gets the single-threaded BLAS set-up above.
    """
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="fedalign-") as tmp:
            return simulate(
                settings, source, out_dir=tmp, user_factory=user_factory, isolated=isolated
            )
    if isolated:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context, initializer=_isolated_process) as pool:
            return pool.submit(
                simulate, settings, source, out_dir=out_dir, user_factory=user_factory,
                isolated=False,
            ).result()  # fmt: skip
    quiet()
    from flwr.simulation import run_simulation

    started = time.time()
    show_progress(settings.progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=make_server_app(settings, source, out_dir),
            client_app=make_client_app(settings, source, user_factory),
            num_supernodes=settings.num_users,
            backend_config={
                "client_resources": {"num_cpus": settings.cpus_per_user, "num_gpus": 0.0},
                "init_args": {
                    "logging_level": logging.WARNING,
                    "log_to_driver": False,
                    "include_dashboard": False,
                },
            },
        )
    written = Path(out_dir) / PRECODERS_FILE  # the last file the ServerApp writes
    if not written.exists() or written.stat().st_mtime < started - 1:
        raise SimulationFailed("the Flower simulation ended without results; see the log above")
    return RunOutcome.load(out_dir)

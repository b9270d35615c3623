"""Run one experiment as a Flower simulation on the Ray backend, in this process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

from clients.client_app import UserFactory, default_user, make_client_app
from common.settings import RunSettings
from common.sources import ProblemSource
from server.server_app import RunOutcome, make_server_app

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_LOG_LEVEL": "WARNING",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "TQDM_DISABLE": "1",  # no per-actor progress bars from inside the users
}


# One BLAS thread per process: the AP and every Ray actor each get a core, and
# multi-threaded BLAS spinning beside them slows a round down many times over.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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
    user_factory: UserFactory = default_user,
    isolated: bool = True,
) -> RunOutcome:
    """One user per simulated SuperNode, ``settings.cpus_per_user`` CPUs each.

    By default the simulation runs in a freshly spawned process and its outcome
    comes back pickled: starting Ray a second time from a process that already
    holds many threads (a Hydra ``-m`` sweep, a benchmark) can deadlock, and a
    fresh process also gets the single-threaded BLAS set-up above.
    """
    if isolated:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context, initializer=_isolated_process) as pool:
            return pool.submit(
                simulate, settings, source, user_factory=user_factory, isolated=False
            ).result()
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)  # FLWR_LOG_LEVEL is read at import

    sink: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=make_server_app(settings, source, sink),
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
    if "outcome" not in sink:
        raise SimulationFailed("the Flower simulation ended without results; see the log above")
    return sink["outcome"]

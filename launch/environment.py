"""The process environment of a run: quiet Flower and Ray, one BLAS thread per process.

Defined once here and applied by every entry point (``run_simulation.py``, the
simulation helper, ``scripts/flwr_local.sh`` through ``python -m launch.environment``).
"""

from __future__ import annotations

import os
import signal
import sys

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_LOG_LEVEL": "WARNING",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "TQDM_DISABLE": "1",  # no per-actor progress bars from inside the users
}

# One BLAS thread per process: the AP and every Ray actor each get a core, and
# multi-threaded BLAS spinning beside them slows a round down many times over.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def quiet() -> None:
    """Set the quiet variables (unless the caller set them); call before flwr/ray import."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def single_threaded() -> None:
    """Initializer of a fresh worker process: one BLAS thread, inherited by its children
    (the Ray workers a simulation starts from there), and no life beyond its parent's."""
    from threadpoolctl import threadpool_limits

    die_with_parent()
    os.environ.update(SINGLE_THREAD_ENV)
    threadpool_limits(1)  # for a numpy already imported


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux), so that a killed
    driver never leaves a simulation computing as an orphan; Ray's own processes share
    the fate of the process that started them."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call took effect
        os._exit(1)


if __name__ == "__main__":  # `eval "$(python -m launch.environment)"` in shell scripts
    print("export " + " ".join(f"{k}={v}" for k, v in QUIET_ENV.items()))

"""The process environment of a run: quiet Flower and Ray, one BLAS thread per process.

Defined once here and applied by every entry point (``run_simulation.py``, the
simulation helper, ``scripts/flwr_local.sh`` through ``python -m launch.environment``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

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
    (the Ray workers a simulation starts from there), no life beyond its parent's, and no
    Ctrl-C of its own."""
    from threadpoolctl import threadpool_limits

    die_with_parent()
    # Ctrl-C is the parent's to handle (worker_pool): a process group of its own keeps the
    # terminal's SIGINT from this process and what it starts (Ray), which the parent then
    # stops at once, instead of every process unwinding and printing on its own
    os.setpgid(0, 0)
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


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Freshly spawned worker processes (:func:`single_threaded`) that an exception or
    Ctrl-C in the parent stops at once, with everything they started (Ray's processes):
    waiting for them to wind down can take minutes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=single_threaded)
    try:
        yield pool
    except BaseException:
        for worker in list((getattr(pool, "_processes", None) or {}).values()):
            stop_tree(worker.pid)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every live process below ``pid`` (a zombie computes nothing), with its command line."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:  # gone
        return []
    found = []
    for child in below:
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append((child.pid, " ".join(child.cmdline())))
    return found


def stop_process(pid: int, grace: float = 10.0) -> None:
    """Stop a process group started here: SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_tree(pid: int, grace: float = 3.0) -> None:
    """Stop ``pid`` and every process below it (a simulation's worker, Ray's processes and
    actors), whatever process group they are in. ``pid`` is killed outright, so that it does
    not react to its children's end; they get SIGTERM, then SIGKILL after ``grace``."""
    pids = [pid] + [child for child, _ in descendants(pid)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    for target in pids[1:]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        time.sleep(0.1)
    for target in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:  # gone
        return False


if __name__ == "__main__":  # `eval "$(python -m launch.environment)"` in shell scripts
    print("export " + " ".join(f"{k}={v}" for k, v in QUIET_ENV.items()))

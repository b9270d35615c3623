"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

from launch.environment import descendants

T = TypeVar("T")


def measure(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Run ``fn``; return its value, wall seconds and peak traced memory in MiB.

    numpy reports its buffers to tracemalloc, so the peak covers the arrays the
    run allocates (not the interpreter or already-loaded libraries).
    """
    tracemalloc.start()
    start = time.perf_counter()
    try:
        value = fn()
        wall = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return value, wall, peak / 2**20


def max_rss_mib() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def verdict(name: str, value: float, target: float, unit: str, *, lower_is_better=True) -> str:
    ok = value <= target if lower_is_better else value >= target
    sign = "<=" if lower_is_better else ">="
    return (
        f"{'PASS' if ok else 'MISS'}  {name}: {value:.3g} {unit} (target {sign} {target:g} {unit})"
    )


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _pss(pid: int) -> int:
    """Proportional set size: each shared page split among the processes that map it."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _system_used() -> int:
    """MemTotal - MemAvailable: what the whole machine holds, shared memory included."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            info[name] = int(rest.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class PeakMemory:
    """Peak memory of this process and every process below it (Ray's included), three ways.

    ``system``: the machine's memory in use above its level when sampling began,
    which holds shared memory once, mapped or not (the figure the targets use);
    ``pss``: summed proportional sizes, which count a shared page once; ``rss``:
    summed resident sizes, which count a shared page once per process. The last
    two are read every ``PROCESSES_EVERY`` samples only: walking every process's
    mappings takes CPU from the run being measured.
    """

    PROCESSES_EVERY = 10  # samples; the machine-wide figure is read at every one

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self._stop = interval, threading.Event()
        self.rss = self.pss = self.system = 0

    def _sample(self, processes: bool) -> None:
        self.system = max(self.system, _system_used() - self._baseline)
        if not processes:
            return
        rss = pss = 0
        for pid in [os.getpid(), *(pid for pid, _ in descendants(os.getpid()))]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss, pss = rss + _rss(pid), pss + _pss(pid)
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)

    def __enter__(self) -> PeakMemory:
        self._baseline = _system_used()

        def loop():
            count = 0
            while not self._stop.is_set():
                self._sample(count % self.PROCESSES_EVERY == 0)
                count += 1
                time.sleep(self.interval)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def __str__(self) -> str:
        gib = 2**30
        return (
            f"peak memory {self.system / gib:5.2f} GiB machine-wide "
            f"(PSS {self.pss / gib:5.2f}, summed RSS {self.rss / gib:5.2f})"
        )

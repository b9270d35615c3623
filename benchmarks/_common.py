"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

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

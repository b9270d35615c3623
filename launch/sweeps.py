"""Running many points: the point store a config names, and running the points it lacks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from pathlib import Path

from tqdm.auto import tqdm

from common.run.points import PointStore
from common.run.settings import RunSettings
from common.schema import Scope
from launch.environment import worker_pool


def point_store(settings: RunSettings) -> PointStore | None:
    """The sweep's point store the settings name (``None``: no reuse of finished points)."""
    root = settings.sweep_store
    return None if root is None else PointStore(Path(root))


def _key(point: RunSettings, include: Callable[[Scope], bool]) -> tuple[str, tuple[str, ...]]:
    """The point's users and the settings of the scopes ``include`` passes."""
    return json.dumps(point.identity(include), sort_keys=True), point.users.models


def warm_sweep_assets(points: Sequence[RunSettings]) -> None:
    """Build or load the assets of every distinct user set once, before any simulation, and
    refuse the sweep if any point cannot fit in memory."""
    from launch.simulation import warm_assets

    groups: dict[tuple, list[RunSettings]] = {}
    for point in points:
        groups.setdefault(_key(point, lambda scope: scope.names_assets), []).append(point)
    for group in groups.values():
        warm_assets(group)


def interrupted(store: PointStore, points: Sequence[RunSettings]) -> int:
    """Say what an interrupted sweep kept (Ctrl-C); the exit status."""
    import sys

    done = sum(store.finished(point) for point in points)
    print(
        f"interrupted: {done} of {len(points)} points are finished and kept in {store.root}; "
        "the same command redoes only the others",
        file=sys.stderr,
        flush=True,
    )
    return 130


def run_unfinished(
    store: PointStore,
    points: Sequence[RunSettings],
    *,
    in_process: bool = False,
    in_flight: int | None = None,
    jobs: int | None = None,
) -> None:
    """Run the points ``store`` lacks and save each there as it finishes.

    Through Flower (one simulation for all of them, ``in_flight`` points sharing
    each round) or, with ``in_process``, by the in-process driver in ``jobs``
    processes (default: one per core), which gives the same numbers. Raises
    :class:`~launch.simulation.SimulationFailed` naming the points that failed.
    """
    distinct = {store.path(c).name: c for c in points}  # studies share some points
    todo = [c for c in distinct.values() if not store.finished(c)]
    print(
        f"sweep: {len(distinct)} points, {len(distinct) - len(todo)} already finished in "
        f"{store.root}, {len(todo)} to run "
        f"({'in process' if in_process else 'through Flower'})",
        flush=True,
    )
    if not todo:
        return
    warm_sweep_assets(todo)
    if not in_process:
        from launch.simulation import simulate_sweep

        simulate_sweep(todo, store, **({} if in_flight is None else {"in_flight": in_flight}))
        return
    _run_in_process(store, todo, jobs or os.cpu_count() or 1)


def _run_points_in_process(store: PointStore, points: Sequence[RunSettings]) -> int:
    """Run ``points`` (which share one problem) in this process, saving each; their count."""
    from common.assets.source import AssetSource
    from common.run.driver import run_experiment

    problem = AssetSource(points[0]).problem()
    for point in points:
        store.save(point, run_experiment(problem, point, folder=store.outputs(point)))
    return len(points)


def _run_in_process(store: PointStore, points: Sequence[RunSettings], jobs: int) -> None:
    """The in-process driver over ``jobs`` processes (one BLAS thread each).

    A problem depends on the assets, the pilots and the seed; the points of one
    problem are dealt out to the processes, each of which loads it once.
    """
    problems: dict[tuple, list[RunSettings]] = {}
    for point in points:
        problems.setdefault(_key(point, lambda scope: scope.names_data), []).append(point)
    parts = [group[j::jobs] for group in problems.values() for j in range(jobs) if group[j::jobs]]
    with worker_pool(jobs) as pool:
        futures = [pool.submit(_run_points_in_process, store, part) for part in parts]
        with tqdm(total=len(points), desc="points") as bar:
            for future in as_completed(futures):
                bar.update(future.result())

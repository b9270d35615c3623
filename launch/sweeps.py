"""Running many cells: the cell store a config names, and running the cells it lacks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from pathlib import Path

from tqdm.auto import tqdm

from common.run.cells import CellStore
from common.run.settings import RunSettings
from common.schema import Scope
from launch.environment import worker_pool


def cell_store(settings: RunSettings) -> CellStore | None:
    """The sweep's cell store the settings name (``None``: no reuse of finished cells)."""
    root = settings.sweep_store
    return None if root is None else CellStore(Path(root))


def _key(cell: RunSettings, include: Callable[[Scope], bool]) -> tuple[str, tuple[str, ...]]:
    """The cell's users and the settings of the scopes ``include`` passes."""
    return json.dumps(cell.identity(include), sort_keys=True), cell.users.models


def prepare_assets(cells: Sequence[RunSettings]) -> None:
    """Build or load the assets of every distinct user set once, before any simulation, and
    refuse the sweep if any cell cannot fit in memory."""
    from launch.simulation import prepare

    groups: dict[tuple, list[RunSettings]] = {}
    for cell in cells:
        groups.setdefault(_key(cell, lambda scope: scope.names_assets), []).append(cell)
    for group in groups.values():
        prepare(group)


def interrupted(store: CellStore, cells: Sequence[RunSettings]) -> int:
    """Say what an interrupted sweep kept (Ctrl-C); the exit status."""
    import sys

    done = sum(store.finished(cell) for cell in cells)
    print(f"interrupted: {done} of {len(cells)} cells are finished and kept in {store.root}; "
          "the same command redoes only the others", file=sys.stderr, flush=True)  # fmt: skip
    return 130


def run_unfinished(
    store: CellStore,
    cells: Sequence[RunSettings],
    *,
    in_process: bool = False,
    in_flight: int | None = None,
    jobs: int | None = None,
) -> None:
    """Run the cells ``store`` lacks and save each there as it finishes.

    Through Flower (one simulation for all of them, ``in_flight`` cells sharing
    each round) or, with ``in_process``, by the in-process driver in ``jobs``
    processes (default: one per core), which gives the same numbers. Raises
    :class:`~launch.simulation.SimulationFailed` naming the cells that failed.
    """
    distinct = {store.path(c).name: c for c in cells}  # studies share some cells
    todo = [c for c in distinct.values() if not store.finished(c)]
    print(f"sweep: {len(distinct)} cells, {len(distinct) - len(todo)} already finished in "
          f"{store.root}, {len(todo)} to run "
          f"({'in process' if in_process else 'through Flower'})", flush=True)  # fmt: skip
    if not todo:
        return
    prepare_assets(todo)
    if not in_process:
        from launch.simulation import simulate_sweep

        simulate_sweep(todo, store, **({} if in_flight is None else {"in_flight": in_flight}))
        return
    _run_in_process(store, todo, jobs or os.cpu_count() or 1)


def _run_cells_in_process(store: CellStore, cells: Sequence[RunSettings]) -> int:
    """Run ``cells`` (which share one problem) in this process, saving each; their count."""
    from common.assets.source import AssetSource
    from common.run.driver import run_experiment

    problem = AssetSource(cells[0]).problem()
    for cell in cells:
        store.save(cell, run_experiment(problem, cell))
    return len(cells)


def _run_in_process(store: CellStore, cells: Sequence[RunSettings], jobs: int) -> None:
    """The in-process driver over ``jobs`` processes (one BLAS thread each).

    A problem depends on the assets, the pilots and the seed; the cells of one
    problem are dealt out to the processes, each of which loads it once.
    """
    problems: dict[tuple, list[RunSettings]] = {}
    for cell in cells:
        problems.setdefault(_key(cell, lambda scope: scope.names_data), []).append(cell)
    parts = [group[j::jobs] for group in problems.values() for j in range(jobs) if group[j::jobs]]
    with worker_pool(jobs) as pool:
        futures = [pool.submit(_run_cells_in_process, store, part) for part in parts]
        with tqdm(total=len(cells), desc="cells") as bar:
            for future in as_completed(futures):
                bar.update(future.result())

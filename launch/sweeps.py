"""Running many cells: the cell store a config names, and running the cells it lacks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common.run.cells import CellStore
from common.run.settings import RunSettings
from launch.environment import worker_pool

STORE_KEY = "sweep_store"
IN_FLIGHT_KEY = "sweep_in_flight"
# What a party's cached assets (encoder latents, head) depend on.
ASSET_FIELDS = ("dataset", "data_root", "split_seed", "zoo", "models", "head_seed",
                "cache_dir", "weights_dir")  # fmt: skip


def cell_store(cfg: Any) -> CellStore | None:
    """The sweep's cell store named by the config (``None``: no reuse of finished cells)."""
    root = cfg.get(STORE_KEY) if hasattr(cfg, "get") else None
    return None if root in (None, "") else CellStore(Path(str(root)))


def _key(cell: RunSettings, fields: Sequence[str]) -> tuple:
    return tuple(getattr(cell, name) for name in fields)


def prepare_assets(cells: Sequence[RunSettings]) -> None:
    """Build or load the assets of every distinct user set once, before any simulation, and
    refuse the sweep if any cell cannot fit in memory."""
    from launch.simulation import prepare

    groups: dict[tuple, list[RunSettings]] = {}
    for cell in cells:
        groups.setdefault(_key(cell, ASSET_FIELDS), []).append(cell)
    for group in groups.values():
        prepare(group)


def interrupted(store: CellStore, cells: Sequence[RunSettings]) -> int:
    """Say what an interrupted sweep kept (Ctrl-C); the exit status."""
    import sys

    done = sum(store.finished(cell) for cell in cells)
    print(f"interrupted: {done} of {len(cells)} cells are finished and kept in {store.root}; "
          "the same command redoes only the others", file=sys.stderr, flush=True)  # fmt: skip
    return 130


def cells_in_flight(cfg: Any) -> int:
    """How many cells share each Flower round (the config's ``sweep_in_flight``)."""
    from server.server_app import CELLS_IN_FLIGHT

    value = cfg.get(IN_FLIGHT_KEY) if hasattr(cfg, "get") else None
    if value is None:
        return CELLS_IN_FLIGHT
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config key {IN_FLIGHT_KEY!r} must be a whole number >= 1, got {value!r}")
    return value


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
        problems.setdefault(_key(cell, (*ASSET_FIELDS, "pilot_fraction", "seed")), []).append(cell)
    parts = [group[j::jobs] for group in problems.values() for j in range(jobs) if group[j::jobs]]
    with worker_pool(jobs) as pool:
        futures = [pool.submit(_run_cells_in_process, store, part) for part in parts]
        with tqdm(total=len(cells), desc="cells") as bar:
            for future in as_completed(futures):
                bar.update(future.result())

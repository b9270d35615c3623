"""Sweeps from the command line: the cell store a config names, and running what it lacks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.run.cells import CellStore
from common.run.settings import RunSettings

STORE_KEY = "sweep_store"


def cell_store(cfg: Any) -> CellStore | None:
    """The sweep's cell store named by the config (``None``: no reuse of finished cells)."""
    root = cfg.get(STORE_KEY) if hasattr(cfg, "get") else None
    return None if root in (None, "") else CellStore(Path(str(root)))


def run_unfinished(store: CellStore, cells: list[RunSettings]) -> None:
    """Simulate the cells ``store`` lacks (assets prepared first); report what failed."""
    from launch.simulation import SimulationFailed, prepare, simulate_sweep

    todo = [cell for cell in cells if not store.finished(cell)]
    print(f"sweep: {len(cells)} cells, {len(cells) - len(todo)} already finished in "
          f"{store.root}, {len(todo)} to run", flush=True)  # fmt: skip
    if not todo:
        return
    for user_set in {(c.dataset, c.split_seed, c.zoo, c.models): c for c in todo}.values():
        prepare(user_set)
    try:
        simulate_sweep(todo, store)
    except SimulationFailed as exc:  # the jobs of the missing cells report it too
        print(f"error: {exc}", file=sys.stderr, flush=True)

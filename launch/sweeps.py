"""Running many cells: the cell store a config names, and running the cells it lacks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common.run.cells import CellStore
from common.run.settings import RunSettings

STORE_KEY = "sweep_store"
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
    """Build or load the assets of every distinct user set once, before any simulation."""
    from launch.simulation import prepare

    for cell in {_key(cell, ASSET_FIELDS): cell for cell in cells}.values():
        prepare(cell)


def run_unfinished(
    store: CellStore, cells: Sequence[RunSettings], *, in_process: bool = False
) -> None:
    """Run the cells ``store`` lacks and save each there as it finishes.

    Through Flower (one simulation for all of them) or, with ``in_process``, by
    the in-process driver, which gives the same numbers. Raises
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

        simulate_sweep(todo, store)
        return
    from common.assets.source import AssetSource
    from common.run.driver import run_experiment

    problems: dict[tuple, Any] = {}  # a problem depends on the assets, the pilots and the seed
    for cell in tqdm(todo, desc="cells"):
        key = _key(cell, (*ASSET_FIELDS, "pilot_fraction", "seed"))
        if key not in problems:
            problems[key] = AssetSource(cell).problem()
        store.save(cell, run_experiment(problems[key], cell))

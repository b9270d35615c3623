"""The ServerApp: the access point of one run, driven by :class:`AlignmentStrategy`.

It builds the AP from its own inputs only (its encoder's latents; never a
user's), runs every round over the grid, and writes the run's outcome (tables
and learned precoders) to its output folder: the run config's ``output-dir``
under ``flwr run``, or where the simulation helper's sink puts it. A sweep's
cells run back to back in one ServerApp, over the same SuperNodes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.run.reporting import headline, show_progress
from common.run.results import RunOutcome
from common.run.session import Session, build_access_point
from common.run.settings import RunSettings
from common.run.sources import ProblemSource
from server.strategy import AlignmentStrategy

logger = logging.getLogger(__name__)

# How often Flower's grid looks for replies (its own default, 0.1 s, adds up to a
# tenth of a second to every round).
PULL_INTERVAL_S = 0.01


class CellsFailed(RuntimeError):
    """Some cells of a sweep failed (the others finished and were written)."""


def run_access_point(
    grid: Grid,
    settings: RunSettings,
    source: ProblemSource,
    *,
    node_wait_timeout: float = 300.0,
    round_timeout: float = 3600.0,
    user_nodes: dict[int, int] | None = None,
) -> RunOutcome:
    """Build the AP and its session, run every round over ``grid``, return the outcome."""
    if source.num_users != settings.num_users:
        raise ValueError(
            f"the source provides {source.num_users} users but the settings name "
            f"{settings.num_users} ({', '.join(settings.models)})"
        )
    inputs = source.ap_inputs()
    ap = build_access_point(settings, inputs, list(range(settings.num_users)))
    session = Session(ap, settings, inputs)
    strategy = AlignmentStrategy(
        session, node_wait_timeout=node_wait_timeout, user_nodes=user_nodes
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in ap.precoders().items()}),
        num_rounds=ap.num_rounds,
        timeout=round_timeout,
    )
    return session.outcome(precoders={k: a.numpy() for k, a in result.arrays.items()})


Sink = Callable[[RunSettings, RunOutcome], Path]
"""Where a finished cell's outcome goes; returns the folder it was written to."""


def run_cells(
    grid: Grid,
    cells: Sequence[RunSettings],
    sink: Sink,
    source: ProblemSource | None = None,
) -> None:
    """Run the cells one after the other over the same nodes, each with a fresh AP and users.

    Each outcome goes to ``sink`` as soon as its cell finishes, so an interrupted
    sweep keeps every finished cell. A cell that fails is reported and the sweep
    goes on with the next one; :class:`CellsFailed` names every failed cell at
    the end. A single run's error is raised as it is.
    """
    user_nodes: dict[int, int] = {}
    failed: list[str] = []
    for number, settings in enumerate(cells, start=1):
        if len(cells) > 1:
            logger.info("cell %d/%d", number, len(cells))
        try:
            src = source
            if src is None:
                from common.assets.source import AssetSource

                src = AssetSource(settings)
            outcome = run_access_point(grid, settings, src, user_nodes=user_nodes)
            folder = sink(settings, outcome)
        except Exception as exc:
            if len(cells) == 1:
                raise
            logger.error("cell %d/%d failed: %s: %s", number, len(cells), type(exc).__name__, exc)
            failed.append(f"cell {number}: {type(exc).__name__}: {exc}")
            continue
        logger.info("%s", headline(outcome.results))
        logger.info("wrote the tables and precoders.npz to %s", folder)
    if failed:
        shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        raise CellsFailed(f"{len(failed)} of {len(cells)} cells failed: {shown}")


@dataclass(frozen=True)
class WriteTo:
    """A sink that writes one run's outcome into ``folder`` (picklable, unlike a closure)."""

    folder: str | Path

    def __call__(self, settings: RunSettings, outcome: RunOutcome) -> Path:
        outcome.save(self.folder)
        return Path(self.folder)


def run_from_config(grid: Grid, context: Context, source: ProblemSource | None) -> None:
    """``flwr run``: one run, or a sweep (Hydra sweep syntax in ``overrides``), from the run
    config. One run writes its tables to ``output-dir``; a sweep keeps each cell in
    ``output-dir/cells/<key>`` (finished cells are skipped when the same sweep runs
    again) and lists the cells in ``output-dir/cells.csv``."""
    from common.run.cells import CellStore
    from conf import sweep_cells

    folder = Path(str(context.run_config.get("output-dir") or "")
                  or Path("outputs/flwr") / str(context.run_id))  # fmt: skip
    cells = sweep_cells(str(context.run_config.get("overrides", "")))
    show_progress(any(settings.progress for _, settings in cells))
    if len(cells) == 1:
        run_cells(grid, [cells[0][1]], WriteTo(folder), source)
        return
    store = CellStore(folder / "cells")
    index = pd.DataFrame(
        [{"cell": store.path(s).name, "overrides": text} for text, s in cells]
    )
    folder.mkdir(parents=True, exist_ok=True)
    index.to_csv(folder / "cells.csv", index=False)
    todo = [s for _, s in cells if not store.finished(s)]
    logger.info("sweep: %d cells, %d already finished in %s", len(cells),
                len(cells) - len(todo), store.root)  # fmt: skip
    run_cells(grid, todo, store.save, source)


def make_server_app(
    cells: Sequence[RunSettings] | None = None,
    sink: Sink | None = None,
    source: ProblemSource | None = None,
) -> ServerApp:
    """A ServerApp bound to its cells and sink (simulation), or reading one run from the
    run config (``flwr run``: ``overrides`` and ``output-dir``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if hasattr(grid, "pull_interval"):  # the in-memory grid of a simulation
            grid.pull_interval = PULL_INTERVAL_S
        if cells is None:
            run_from_config(grid, context, source)
        else:
            run_cells(grid, cells, sink or WriteTo("outputs/flwr"), source)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] serverapp).
app = make_server_app()

"""The ServerApp: the access point of one run, driven by :class:`AlignmentStrategy`.

It builds the AP from its own inputs only (its encoder's latents; never a
user's), runs every round over the grid, and writes the run's outcome (tables
and learned precoders) to its output folder: the run config's ``output-dir``
under ``flwr run``, or where the simulation helper's sink puts it. A sweep's
cells run back to back in one ServerApp, over the same SuperNodes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.parties.access_point import access_point_class
from common.run.checkpoint import CHECKPOINT_FILE, CheckpointError, remove_checkpoint
from common.run.reporting import headline, show_progress
from common.run.results import RunOutcome
from common.run.session import Session, build_access_point
from common.run.settings import RunSettings
from common.run.sources import ProblemSource
from server.pacing import PacedGrid
from server.strategy import AlignmentStrategy

logger = logging.getLogger(__name__)

# How often Flower's grid looks for replies (its own default, 0.1 s, adds up to a
# tenth of a second to every round).
PULL_INTERVAL_S = 0.01
# How many cells of a sweep share each Flower round by default (run config ``cells-in-flight``,
# Hydra ``sweep_in_flight``): Flower's fixed cost per round is paid once for all of them.
CELLS_IN_FLIGHT = 8


class CellsFailed(RuntimeError):
    """Some cells of a sweep failed (the others finished and were written)."""


def open_session(
    settings: RunSettings,
    source: ProblemSource,
    journal: Path | None = None,
    *,
    resume: bool | None = None,
) -> Session:
    """The AP of one run over its own inputs, and the session that will drive it
    (writing its history and checkpoint to ``journal`` after every round, when given;
    resuming from that checkpoint when ``resume``, by default when the settings say so)."""
    if source.num_users != settings.num_users:
        raise ValueError(
            f"the source provides {source.num_users} users but the settings name "
            f"{settings.num_users} ({', '.join(settings.users.models)})"
        )
    inputs = source.ap_inputs()
    ap = build_access_point(settings, inputs, list(range(settings.num_users)))
    session = Session(ap, settings, inputs, journal=journal)
    if settings.experiment.resume if resume is None else resume:
        if journal is None:
            raise CheckpointError(
                "experiment.resume=true continues a single run in its output folder; a sweep "
                "resumes by itself (its finished cells are kept and skipped)"
            )
        session.resume(journal)
    return session


def run_sessions(
    grid: Grid,
    sessions: Sequence[Session],
    *,
    node_wait_timeout: float = 300.0,
    round_timeout: float = 3600.0,
    round_timeout_factor: float = 0.0,
    user_nodes: dict[int, int] | None = None,
    group_size: int | None = None,
) -> list[RunOutcome]:
    """Run every round of ``sessions`` in lockstep over ``grid``; their outcomes, in order
    (``group_size``: the most users of any cell served by the same nodes). A round waits
    at most ``round_timeout`` seconds, and ``round_timeout_factor`` times the slowest
    round so far once one has completed (:class:`~server.pacing.PacedGrid`)."""
    strategy = AlignmentStrategy(
        sessions, node_wait_timeout=node_wait_timeout, user_nodes=user_nodes,
        group_size=group_size,
    )  # fmt: skip
    initial = ArrayRecord({
        f"{i}.{k}": Array(v) for i, s in enumerate(sessions) for k, v in s.ap.precoders().items()
    })  # fmt: skip
    result = strategy.start(
        grid=PacedGrid(grid, round_timeout, round_timeout_factor), initial_arrays=initial,
        num_rounds=strategy.rounds_to_run, timeout=round_timeout,
    )
    outcomes = []
    for index, session in enumerate(sessions):
        prefix = f"{index}."
        precoders = {
            k[len(prefix) :]: a.numpy() for k, a in result.arrays.items() if k.startswith(prefix)
        }
        outcomes.append(session.outcome(precoders=precoders))
    return outcomes


class Sink(Protocol):
    """Where a finished cell's outcome goes (returns the folder it was written to), and
    where its rounds and AP checkpoint go while it runs (``journal``; None: nowhere)."""

    def __call__(self, settings: RunSettings, outcome: RunOutcome) -> Path: ...

    def journal(self, settings: RunSettings) -> Path | None: ...


def lockstep_batches(cells: Sequence[RunSettings], in_flight: int) -> list[list[int]]:
    """Cell indices in batches of at most ``in_flight`` cells that can share every round:
    same users and same number of rounds, split as evenly as possible."""
    classes: dict[tuple, list[int]] = {}
    for i, cell in enumerate(cells):
        rounds = access_point_class(cell.strategy.name).rounds_for(cell.experiment.rounds)
        classes.setdefault((cell.users.models, rounds), []).append(i)
    batches = []
    for members in classes.values():
        count = -(-len(members) // in_flight)
        batches += [members[b::count] for b in range(count)]
    return batches


def run_cells(
    grid: Grid,
    cells: Sequence[RunSettings],
    sink: Sink,
    source: ProblemSource | None = None,
    *,
    in_flight: int = 1,
) -> None:
    """Run the cells over the same nodes, each with a fresh AP and users.

    Up to ``in_flight`` cells with the same users and number of rounds run in
    lockstep, sharing every Flower round; each cell's numbers are those it
    gets alone. Each outcome goes to ``sink`` as soon as its cell finishes, so
    an interrupted sweep keeps every finished cell. A cell that fails is
    reported and the sweep goes on with the others; :class:`CellsFailed` names
    every failed cell at the end. A single run's error is raised as it is.
    """
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    user_nodes: dict[int, int] = {}
    failed: list[str] = []
    total = len(cells)

    def fail(number: int, exc: Exception) -> None:
        if total == 1:
            raise exc
        text = " ".join([f"{type(exc).__name__}: {exc}", *getattr(exc, "__notes__", [])])
        logger.error("cell %d/%d failed: %s", number, total, text)
        failed.append(f"cell {number}: {text}")

    done = 0
    for batch in lockstep_batches(cells, in_flight):
        groups: dict[tuple, list[tuple[int, Session]]] = {}
        for i in batch:
            # every cell's rounds go to its journal as they finish; a sweep's cell resumes
            # from the checkpoint there by itself, a single run when asked to
            journal = sink.journal(cells[i]) if hasattr(sink, "journal") else None
            resume = cells[i].experiment.resume or (
                total > 1 and journal is not None and (journal / CHECKPOINT_FILE).exists()
            )
            try:
                session = open_session(cells[i], source or _asset_source(cells[i]), journal,
                                       resume=resume)  # fmt: skip
            except Exception as exc:
                fail(i + 1, exc)
                continue
            shape = (session.ap.users, session.last_round, session.completed)
            groups.setdefault(shape, []).append((i + 1, session))
        for group in groups.values():
            if total > 1:
                logger.info("cells %s of %d (%d finished)",
                            ", ".join(str(n) for n, _ in group), total, done)  # fmt: skip
            sessions = [s for _, s in group]
            try:
                outcomes = run_sessions(
                    grid, sessions, user_nodes=user_nodes,
                    group_size=max(cell.num_users for cell in cells),
                    node_wait_timeout=max(s.settings.node_wait for s in sessions),
                    round_timeout=max(s.settings.experiment.round_timeout for s in sessions),
                    round_timeout_factor=max(
                        s.settings.experiment.round_timeout_factor for s in sessions
                    ),
                )  # fmt: skip
            except Exception as exc:
                for number, _ in group:
                    fail(number, exc)
                continue
            for (number, session), outcome in zip(group, outcomes, strict=True):
                if len(outcome.results):  # the summary first: a write below may fail
                    logger.info("%s", headline(outcome.results))
                try:
                    folder = sink(session.settings, outcome)
                except Exception as exc:
                    if session.journal is not None:
                        exc.add_note(f"the history and failures of every round are kept in "
                                     f"{session.journal} (written as the run went)")  # fmt: skip
                    fail(number, exc)
                    continue
                done += 1
                logger.info("wrote the tables and precoders.npz to %s", folder)
    if failed:
        shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        raise CellsFailed(f"{len(failed)} of {total} cells failed: {shown}")


def _asset_source(settings: RunSettings) -> ProblemSource:
    from common.assets.source import AssetSource

    return AssetSource(settings)


@dataclass(frozen=True)
class WriteTo:
    """A sink that writes one run's outcome into ``folder`` (picklable, unlike a closure)."""

    folder: str | Path

    def __call__(self, settings: RunSettings, outcome: RunOutcome) -> Path:
        outcome.save(self.folder)
        remove_checkpoint(self.folder)  # the run is finished: nothing to resume
        return Path(self.folder)

    def journal(self, settings: RunSettings) -> Path:
        """A single run keeps its rounds in its own output folder as they finish."""
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
    show_progress(any(settings.experiment.progress for _, settings in cells))
    if len(cells) == 1:
        run_cells(grid, [cells[0][1]], WriteTo(folder), source)
        return
    in_flight = int(context.run_config.get("cells-in-flight", CELLS_IN_FLIGHT))
    store = CellStore(folder / "cells")
    index = pd.DataFrame([{"cell": store.path(s).name, "overrides": text} for text, s in cells])
    folder.mkdir(parents=True, exist_ok=True)
    index.to_csv(folder / "cells.csv", index=False)
    todo = [s for _, s in cells if not store.finished(s)]
    logger.info("sweep: %d cells, %d already finished in %s", len(cells),
                len(cells) - len(todo), store.root)  # fmt: skip
    run_cells(grid, todo, store, source, in_flight=in_flight)


def make_server_app(
    cells: Sequence[RunSettings] | None = None,
    sink: Sink | None = None,
    source: ProblemSource | None = None,
    *,
    in_flight: int = CELLS_IN_FLIGHT,
) -> ServerApp:
    """A ServerApp bound to its cells and sink (simulation), or reading its runs from the
    run config (``flwr run``: ``overrides``, ``output-dir``, ``cells-in-flight``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if hasattr(grid, "pull_interval"):  # the in-memory grid of a simulation
            grid.pull_interval = PULL_INTERVAL_S
        if cells is None:
            run_from_config(grid, context, source)
        else:
            run_cells(grid, cells, sink or WriteTo("outputs/flwr"), source, in_flight=in_flight)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] serverapp).
app = make_server_app()

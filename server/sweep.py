"""Running sweep points over one set of SuperNodes: lockstep batches, sessions and sinks.

A sweep is a list of points (one :class:`RunSettings` each; a single run is a
sweep of one). Points that share their users, their number of rounds and the
rounds already completed (a resumed point) can share every Flower round:
:func:`lockstep_batches` groups them once, in batches of at most
``in_flight``, and each batch runs as one :class:`AlignmentStrategy`. Each
point's outcome goes to a :class:`Sink` as soon as it finishes (the sweep
store, or a single run's output folder), so an interrupted sweep keeps every
finished point; its rounds go to the sink's journal as they finish, so an
unfinished point resumes from there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flwr.app import Array, ArrayRecord
from flwr.serverapp import Grid

from common.parties.access_point import access_point_class
from common.run.checkpoint import Checkpoint, CheckpointError, remove_checkpoint
from common.run.reporting import headline
from common.run.results import RunOutcome
from common.run.session import Session, build_access_point
from common.run.settings import RunSettings
from common.run.sources import ProblemSource
from server.nodes import NodeRefused, UserNodes, UsersNotConnected
from server.pacing import PacedGrid, simulated
from server.strategy import AlignmentStrategy

logger = logging.getLogger(__name__)

# How many points of a sweep share each Flower round by default (run config
# ``points-in-flight``, Hydra ``sweep_in_flight``): Flower's fixed cost per round is paid once
# for all of them.
POINTS_IN_FLIGHT = 8


class PointsFailed(RuntimeError):
    """Some points of a sweep failed (the others finished and were written)."""


class Sink(Protocol):
    """Where a finished point's outcome goes (returns the folder it was written to), and
    where its rounds and AP checkpoint go while it runs (``journal``; None: nowhere). A
    sink whose ``resumes`` is true (a sweep's store) resumes an unfinished point from its
    journal without being asked; one with an ``outputs(settings)`` folder (a sweep's store)
    has the point's experiment tracker write its files there rather than in the journal."""

    def __call__(self, settings: RunSettings, outcome: RunOutcome) -> Path: ...

    def journal(self, settings: RunSettings) -> Path | None: ...


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


def open_session(
    settings: RunSettings,
    source: ProblemSource,
    journal: Path | None = None,
    *,
    resume: bool | None = None,
) -> Session:
    """The AP of one run over its own inputs, and the session that will drive it.

    Parameters
    ----------
    settings : RunSettings
        The run.
    source : ProblemSource
        Where the AP's inputs come from (only the AP's are loaded).
    journal : Path, optional
        Where the session writes its history and checkpoint after every round.
    resume : bool, optional
        Continue from the checkpoint in ``journal`` (default: ``experiment.resume``).

    Raises
    ------
    ValueError
        The source provides another number of users than the settings name.
    CheckpointError
        Resuming without a journal, or from a checkpoint that does not fit.
    """
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
                "resumes by itself (its finished points are kept and skipped)"
            )
        session.resume(journal)
    return session


def run_sessions(
    grid: Grid,
    sessions: Sequence[Session],
    *,
    nodes: UserNodes | None = None,
    node_wait_timeout: float = 300.0,
    round_timeout: float = 3600.0,
    round_timeout_factor: float = 0.0,
    messages_in_flight: int | None = 0,
    cpus_per_user: float = 1.0,
) -> list[RunOutcome]:
    """Run every round of ``sessions`` in lockstep over ``grid``; their outcomes, in order.

    A round waits at most ``round_timeout`` seconds, and ``round_timeout_factor`` times
    the slowest round so far once one has completed (:class:`~server.pacing.PacedGrid`).
    On a simulation's in-memory grid, at most ``messages_in_flight`` messages of a round
    wait in the link state at once (0: all at once; None: four per simulated actor, one
    actor per ``cpus_per_user`` CPUs of the simulation's Ray); a deployment's grid sends
    all at once.
    """
    strategy = AlignmentStrategy(sessions, nodes=nodes, node_wait_timeout=node_wait_timeout)
    initial = ArrayRecord(
        {f"{i}.{k}": Array(v) for i, s in enumerate(sessions) for k, v in s.ap.precoders().items()}
    )
    paced = PacedGrid(
        grid,
        round_timeout,
        round_timeout_factor,
        window=_window(grid, messages_in_flight, cpus_per_user),
        on_replies=strategy.take_replies,
    )
    if strategy.rounds_to_run:  # none left: resumed in the deployment phase
        strategy.start(
            grid=paced,
            initial_arrays=initial,
            num_rounds=strategy.rounds_to_run,
            timeout=round_timeout,
        )
    strategy.deploy(paced, round_timeout)
    # the AP's own state (after a deployment phase's refresh rounds too)
    return [session.outcome() for session in sessions]


MESSAGES_PER_ACTOR = 4  # a simulated round's messages in flight per actor, by default


def _window(grid: Grid, messages: int | None, cpus_per_user: float):
    """The most messages of a round in flight on ``grid`` (None: no bound).

    Only a simulation's in-memory grid (:func:`~server.pacing.simulated`) is bounded: a
    deployment's SuperNodes poll every few seconds, so a window would add a poll to
    every wave. ``messages`` None: :data:`MESSAGES_PER_ACTOR` per simulated
    actor, counted from the simulation's Ray when the first round is sent (its nodes
    have answered by then).
    """
    if messages == 0 or not simulated(grid):
        return None
    if messages is not None:
        return messages

    def per_actor() -> int:
        import ray

        cpus = ray.cluster_resources().get("CPU", 0) if ray.is_initialized() else 0
        actors = int((cpus or os.cpu_count() or 1) / cpus_per_user)
        return MESSAGES_PER_ACTOR * max(1, actors)

    return per_actor


def _journal(sink: Sink, point: RunSettings) -> Path | None:
    return sink.journal(point) if hasattr(sink, "journal") else None


def _outputs(sink: Sink, point: RunSettings) -> Path | None:
    """Where the point's tracker writes its files: the sink's ``outputs`` folder (a
    sweep's store), else its journal (a single run's output folder)."""
    return sink.outputs(point) if hasattr(sink, "outputs") else _journal(sink, point)


def _resumes(point: RunSettings, journal: Path | None, sink: Sink) -> bool:
    """A run resumes when asked; a point of a store that resumes by itself (a sweep's
    store) whenever its journal holds a checkpoint."""
    by_itself = getattr(sink, "resumes", False)
    return point.experiment.resume or (by_itself and Checkpoint.completed(journal) > 0)


def _rounds(point: RunSettings) -> int:
    """The rounds the point's method trains (its AP class's ``rounds_for``)."""
    return access_point_class(point.strategy.name).rounds_for(point.experiment.rounds)


def lockstep_batches(
    points: Sequence[RunSettings], in_flight: int, completed: Sequence[object] | None = None
) -> list[list[int]]:
    """Point indices in batches of at most ``in_flight`` points that can share every round:
    same users, same number of rounds, the same deployment phase (``tracking.*``) and the
    same progress ``completed`` (resumed points: their rounds, or rounds and slots),
    split as evenly as possible."""
    completed = [0] * len(points) if completed is None else completed
    classes: dict[tuple, list[int]] = {}
    for i, point in enumerate(points):
        key = (point.users.models, _rounds(point), completed[i], point.tracking.plan())
        classes.setdefault(key, []).append(i)
    batches = []
    for members in classes.values():
        count = -(-len(members) // in_flight)
        batches += [members[b::count] for b in range(count)]
    return batches


# Failures of the nodes themselves (missing, or unable to serve the sweep's largest point):
# no point can run, so the sweep stops at once.
GRID_FAILURES = (UsersNotConnected, NodeRefused)


@dataclass
class _Failure:
    number: int
    error: Exception


def _run(
    grid: Grid,
    points: Sequence[RunSettings],
    sink: Sink,
    source: ProblemSource | None,
    in_flight: int,
) -> list[_Failure]:
    """Run the points; the failures of single points, in order (grid failures raise)."""
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    if not points:
        return []
    sweep = len(points) > 1
    journals = [_journal(sink, point) for point in points]
    resumes = [_resumes(p, j, sink) for p, j in zip(points, journals, strict=True)]
    completed = [
        Checkpoint.completed(j) if r else 0 for j, r in zip(journals, resumes, strict=True)
    ]
    # every node is asked once, naming the point with the most users, which each node's
    # user belongs to
    largest = max(points, key=lambda point: point.num_users)
    nodes = UserNodes(largest.num_users, largest.to_json())
    failed: list[_Failure] = []
    done = 0

    def fail(number: int, exc: Exception) -> None:
        text = " ".join([f"{type(exc).__name__}: {exc}", *getattr(exc, "__notes__", [])])
        logger.error("point %d/%d failed: %s", number, len(points), text)
        failed.append(_Failure(number, exc))

    # points resumed in their deployment phase share rounds with those at the same slot
    progress = [
        (done, Checkpoint.slots_done(j) if r else 0)
        for done, j, r in zip(completed, journals, resumes, strict=True)
    ]
    for batch in lockstep_batches(points, in_flight, progress):
        opened: list[tuple[int, Session]] = []
        for i in batch:
            try:
                session = open_session(
                    points[i], source or _asset_source(points[i]), journals[i], resume=resumes[i]
                )
            except Exception as exc:
                fail(i + 1, exc)
                continue
            expected = (completed[i], _rounds(points[i]))
            if (session.completed, session.last_round) != expected:  # a method's own count
                fail(
                    i + 1,
                    ValueError(
                        f"the AP trains {session.last_round} rounds after {session.completed}, "
                        f"but its class's rounds_for() says {expected[1]} after {expected[0]}: "
                        "rounds_for must give the number of rounds num_rounds does"
                    ),
                )
                continue
            session.track(_outputs(sink, points[i]))  # after resuming: a resumed run goes on
            opened.append((i + 1, session))
        if not opened:
            continue
        if sweep:
            numbers = ", ".join(str(n) for n, _ in opened)
            logger.info("points %s of %d (%d finished)", numbers, len(points), done)
        sessions = [s for _, s in opened]
        experiment = [s.settings.experiment for s in sessions]
        try:
            outcomes = run_sessions(
                grid,
                sessions,
                nodes=nodes,
                node_wait_timeout=max(s.settings.node_wait for s in sessions),
                round_timeout=max(e.round_timeout for e in experiment),
                round_timeout_factor=max(e.round_timeout_factor for e in experiment),
                messages_in_flight=experiment[0].messages_in_flight,
                cpus_per_user=experiment[0].cpus_per_user,
            )
        except BaseException as exc:  # the tracked runs end as failed (or killed), then on
            for _, session in opened:
                session.tracker.fail(
                    f"{type(exc).__name__}: {exc}", interrupted=not isinstance(exc, Exception)
                )
            if not isinstance(exc, Exception) or isinstance(exc, GRID_FAILURES):
                for failure in failed:  # what failed before: named with the reason to stop
                    exc.add_note(f"point {failure.number} had failed: {failure.error}")
                raise
            kept = [s.journal for _, s in opened if s.journal is not None and s.completed]
            if len(opened) == 1 and kept:  # a single run: its journal, written every round
                exc.add_note(
                    f"the history and failures of the finished rounds are kept in {kept[0]}"
                )
            for number, _ in opened:
                fail(number, exc)
            continue
        for (number, session), outcome in zip(opened, outcomes, strict=True):
            if len(outcome.results):  # the summary first: a write below may fail
                logger.info("%s", headline(outcome.results))
            try:
                folder = sink(session.settings, outcome)
            except Exception as exc:
                session.tracker.fail(f"{type(exc).__name__}: {exc}")
                if session.journal is not None:
                    exc.add_note(
                        f"the history and failures of every round are kept in "
                        f"{session.journal} (written as the run went)"
                    )
                fail(number, exc)
                continue
            done += 1
            logger.info("wrote the tables and precoders.npz to %s", folder)
            session.tracker.finish(outcome, session.last_round)
    return failed


def run_points(
    grid: Grid,
    points: Sequence[RunSettings],
    sink: Sink,
    source: ProblemSource | None = None,
    *,
    in_flight: int = 1,
) -> None:
    """Run the points over the same nodes, each with a fresh AP and users.

    Up to ``in_flight`` points that can share every round (:func:`lockstep_batches`) run
    in lockstep; each point's numbers are those it gets alone. Each outcome goes to
    ``sink`` as soon as its point finishes. A point that fails is reported and the sweep
    goes on with the others.

    Raises
    ------
    PointsFailed
        Some points failed (named, with their errors); the others were written.
    UsersNotConnected, NodeRefused
        The nodes cannot run any point: the sweep stops at once.
    """
    failed = _run(grid, points, sink, source, in_flight)
    if failed:
        shown = [f"point {f.number}: {type(f.error).__name__}: {f.error}" for f in failed[:3]]
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise PointsFailed(
            f"{len(failed)} of {len(points)} points failed: {'; '.join(shown)}{more}"
        )


def run_point(
    grid: Grid, settings: RunSettings, sink: Sink, source: ProblemSource | None = None
) -> None:
    """Run one experiment over the nodes; its outcome goes to ``sink``.

    Raises
    ------
    Exception
        Whatever stopped the run, as it was raised (a sweep of one point, whose failure
        is its own error rather than :class:`PointsFailed`).
    """
    failed = _run(grid, [settings], sink, source, 1)
    if failed:
        raise failed[0].error


def _asset_source(settings: RunSettings) -> ProblemSource:
    from common.assets.source import AssetSource

    return AssetSource(settings)

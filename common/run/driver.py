"""In-process transport: the protocol without Flower.

It is the reference that the Flower run must match, and the fast path for tests
and sweeps. It drives the same :class:`~common.run.session.Session` as the
Flower strategy, calling the users directly; a user that raises is recorded as
a failure of that round, as a failed ClientApp is under Flower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from common.maths.conventions import Conventions
from common.parties.access_point import AccessPoint, access_point_class
from common.parties.protocol import Message
from common.parties.user import PreparedData, User
from common.run.results import RunOutcome
from common.run.session import Session, build_access_point, build_user
from common.run.settings import RunSettings, listed_models
from common.run.sources import AlignmentProblem


def build_parties(
    problem: AlignmentProblem, settings: RunSettings
) -> tuple[AccessPoint, list[User]]:
    """The AP and users of one run, with every random draw fixed by ``settings.seed``.

    Users given the same :class:`UserData` object (the users of one model) share one
    :class:`PreparedData`: what a user derives from its data alone (pilots, whitening,
    ``Ȳ``) exists once per model, and each user adds only its own (channels, what it
    learns).
    """
    if len(problem.users) != settings.num_users:
        raise ValueError(
            f"the problem has {len(problem.users)} users but the settings name "
            f"{settings.num_users} ({listed_models(settings.users.models)})"
        )
    user_class = access_point_class(settings.strategy.name).user_class
    conventions = Conventions(settings.conventions.name)
    prepared: dict[int, PreparedData] = {}
    users = []
    for k, data in enumerate(problem.users):
        if id(data) not in prepared:
            prepared[id(data)] = user_class.prepare(k, data, conventions)
        users.append(build_user(settings, k, prepared[id(data)]))
    ap = build_access_point(settings, problem.ap, [u.index for u in users])
    return ap, users


def _deliver(
    messages: Mapping[int, Message],
    handle: Callable[[int, Message], object],
    take: Callable[[int, object], None] | None = None,
):
    """Each user's answer, or the error it raised (as a Flower node would report it).

    With ``take``, each answer is handed to it as it comes instead of being kept (an
    error ``take`` raises is the AP's, not the user's: it propagates)."""
    answers, errors = {}, {}
    for k, message in messages.items():
        try:
            answer = handle(k, message)
        except Exception as exc:  # a failing user must not end the run
            errors[k] = f"{type(exc).__name__}: {exc}"
            continue
        if take is None:
            answers[k] = answer
        else:
            take(k, answer)
    return answers, errors


def run_parties(
    ap: AccessPoint,
    users: list[User],
    settings: RunSettings,
    problem: AlignmentProblem,
    *,
    progress: bool = False,
    folder: str | Path | None = None,
) -> RunOutcome:
    """Train for the method's rounds, then evaluate every user; the AP and users are kept.

    The run is also logged to the experiment tracker ``logger.*`` names
    (:mod:`common.run.trackers`); ``folder`` is where its outputs go (TensorBoard's and
    W&B's files; None: ``outputs/<tracker>/<time>``)."""
    session = Session(ap, settings, problem.ap)
    session.track(folder)
    try:
        by_index = {u.index: u for u in users}
        for rnd in tqdm(session.rounds, desc=ap.method, disable=not progress, leave=False):
            downlink = session.train_downlink(rnd, list(by_index))
            # each reply handed over as it comes: the AP keeps its reduction, not K uplinks
            take = partial(session.take_train_reply, rnd)
            _, errors = _deliver(downlink, lambda k, m: by_index[k].train(m), take)
            session.finish_train_round(rnd, {}, errors)
        if not session.evaluated:
            test = session.test_downlink(list(by_index))
            evaluations, errors = _deliver(test, lambda k, m: by_index[k].evaluate(m))
            session.finish_evaluation(evaluations, errors)
        deploy(session, by_index, progress=progress)
        outcome = session.outcome()
    except BaseException as exc:
        session.tracker.fail(
            f"{type(exc).__name__}: {exc}", interrupted=not isinstance(exc, Exception)
        )
        raise
    session.tracker.finish(outcome, session.last_round)
    return outcome


def deploy(session: Session, by_index: Mapping[int, User], *, progress: bool = False) -> None:
    """The deployment phase (``tracking.*``; nothing without slots): each slot's refresh
    rounds (``full``), then its transmission, every user called directly."""
    users = list(by_index)
    for slot in tqdm(session.slots, desc="slots", disable=not progress, leave=False):
        for _ in session.track_rounds(slot):
            downlink = session.track_downlink(slot, users)
            take = partial(session.take_train_reply, 0)
            _, errors = _deliver(downlink, lambda k, m: by_index[k].train(m), take)
            session.finish_track_round(slot, {}, errors)
        messages = session.slot_downlink(slot, users)
        evaluations, errors = _deliver(messages, lambda k, m: by_index[k].evaluate(m))
        session.finish_slot(slot, evaluations, errors)


def run_experiment(
    problem: AlignmentProblem,
    settings: RunSettings,
    *,
    progress: bool = False,
    folder: str | Path | None = None,
) -> RunOutcome:
    """One whole run in this process (logged to ``logger.*``'s tracker, see
    :func:`run_parties`)."""
    ap, users = build_parties(problem, settings)
    return run_parties(ap, users, settings, problem, progress=progress, folder=folder)

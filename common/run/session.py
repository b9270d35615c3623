"""One run's rounds, described once for every transport.

A :class:`Session` is the AP side of one experiment without any notion of how
messages travel: which messages go to whom each round, what is done with the
replies, what is recorded (overhead ledger, history, failures, evaluation).
A transport only delivers them. The in-process driver calls users directly;
the Flower strategy sends Flower messages to SuperNodes. Both drive the same
loop::

    for rnd in session.rounds:
        downlink = session.train_downlink(rnd, users)
        ...deliver, collect replies and errors (or hand each reply over as it
        arrives with session.take_train_reply(rnd, user, reply))...
        session.finish_train_round(rnd, replies, errors)
    test = session.test_downlink(users)
    ...deliver, collect evaluations and errors...
    session.finish_evaluation(evaluations, errors)
    for slot in session.slots:  # a deployment phase (tracking.slots > 0)
        for _ in session.track_rounds(slot):  # tracking.policy=full's refresh rounds
            downlink = session.track_downlink(slot, users)
            ...deliver, take each reply with session.take_train_reply(0, user, reply)...
            session.finish_track_round(slot, replies, errors)
        messages = session.slot_downlink(slot, users)
        ...deliver, collect evaluations and errors...
        session.finish_slot(slot, evaluations, errors)
    outcome = session.outcome()
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.maths.aggregation import aggregator
from common.maths.conventions import Conventions
from common.maths.seeding import Stream, rng
from common.parties.access_point import AccessPoint, access_point_class
from common.parties.faults import FaultyUser
from common.parties.ledger import DOWN, UP, Ledger
from common.parties.protocol import (
    AlignPilots,
    AlignRefit,
    AlignSlot,
    AlignTest,
    AlignTrack,
    Message,
)
from common.parties.user import PreparedData, TrainReply, User, UserData
from common.run.checkpoint import Checkpoint, CheckpointError
from common.run.reporting import write_tables
from common.run.results import (
    FAILURE_COLUMNS,
    HISTORY_COLUMNS,
    TRACKING_COLUMNS,
    RunInfo,
    RunOutcome,
    history_row,
    result_rows,
)
from common.run.settings import RunSettings
from common.run.sources import APInputs
from common.run.trackers import Tracker, open_tracker

logger = logging.getLogger(__name__)

TRAIN, EVALUATE = "train", "evaluate"
# the deployment phase's ledger phases (their round: the slot): the slots' test data, an
# equalizer refresh's pilots, a full refresh's rounds
SLOT, REFRESH, TRACK = "slot", "refresh", "track"


@dataclasses.dataclass(frozen=True)
class Fit:
    """How a user's equalizer was last fitted: on columns ``columns`` (None: all) of the
    pilots ``signal`` (``Nt·u × n`` complex128, as the AP sent them), over its channel at
    ``time`` s after training (0: the training channel)."""

    signal: np.ndarray
    time: float
    columns: np.ndarray | None = None


def build_access_point(
    settings: RunSettings, inputs: APInputs, users: Sequence[int]
) -> AccessPoint:
    """The AP of ``settings.strategy.name`` over its own inputs, every draw fixed by
    ``settings.seed``."""
    return access_point_class(settings.strategy.name)(
        inputs.pilots,
        inputs.test,
        settings.link,
        users,
        rounds=settings.experiment.rounds,
        rho=settings.strategy.rho,
        seed=settings.seed,
        conventions=Conventions(settings.conventions.name),
        aggregator=aggregator(
            **settings.consensus.model_dump(exclude={"aggregator"}),
            name=settings.consensus.aggregator,
        ),
        grouping=settings.strategy.grouping_of(settings.users.models),
    )


def build_user(settings: RunSettings, index: int, data: UserData | PreparedData) -> User:
    """User ``index`` of the method's own user class (the AP class names it); users
    ``0..faulty_users-1`` corrupt their uplinks (fault injection)."""
    user_class = access_point_class(settings.strategy.name).user_class
    user = user_class(
        index,
        data,
        settings.link,
        settings.seed,
        conventions=Conventions(settings.conventions.name),
        channel_config=settings.communication,
        csi=settings.csi,
    )
    if index < settings.faults.users:
        return FaultyUser(user, settings.faults.kind, settings.faults.scale, settings.seed)  # type: ignore[return-value]
    return user


def _warn_deployment(settings: RunSettings) -> None:
    """Warn of a deployment phase that runs but cannot show much: over a channel that does
    not move, or with equalizer refreshes on fewer pilots than the equalizer's unknowns
    per row (``Nr·u``)."""
    t, c = settings.tracking, settings.communication
    if not t.slots:
        return
    if c.speed == 0:
        logger.warning(
            "the deployment phase's %d slots see a static channel (communication.speed=0%s): "
            "every slot decodes over the training channel",
            t.slots,
            "" if c.model in ("tdl", "cdl") else f"; channel={c.model} never moves",
        )
    unknowns = settings.link.rx_dim
    if t.policy == "equalizer" and t.pilots is not None and t.pilots < unknowns:
        logger.warning(
            "tracking.pilots=%d is fewer than the equalizer's Nr·u = %d unknowns per row: "
            "each refresh's fit rests on the noise loading and accuracy will be poor",
            t.pilots,
            unknowns,
        )


def _reliability(metrics: Mapping[str, float]) -> float:
    """A user's weight for weighing aggregators: the inverse of its pilot MSE (1 when it
    reports none, or a useless one). An MSE below the smallest normal float64 counts as
    that (the weight stays finite: at most about 4.5e307)."""
    mse = metrics.get("pilot_mse", math.nan)
    return 1.0 / max(mse, sys.float_info.min) if math.isfinite(mse) and mse > 0 else 1.0


class Session:
    """The AP side of one run: rounds, bookkeeping and the outcome."""

    def __init__(
        self,
        access_point: AccessPoint,
        settings: RunSettings,
        inputs: APInputs,
        *,
        journal: Path | None = None,
    ):
        self.ap = access_point
        self.settings = settings
        # where the history and failures are written after every round (None: nowhere)
        self.journal = journal
        self.info = RunInfo(
            method=access_point.method or settings.strategy.name,
            dataset=inputs.dataset,
            seed=settings.seed,
            ap_model=inputs.model,
            latent_dim_ap=access_point.dim,
            user_models=dict(enumerate(settings.users.models)),
            link=settings.link,
            pilot_fraction=settings.data.pilot_fraction,
            n_pilots=access_point.n_pilots,
            rounds=access_point.num_rounds,
            side_channel_uses=access_point.side_channel_uses(),
            user_group=settings.users.group,
            aggregator=settings.consensus.aggregator,
            participation=settings.consensus.participation,
            faulty_users=settings.faults.users,
            fault=settings.faults.kind if settings.faults.users else "",
            channel=settings.communication,
            csi=settings.csi,
            ap_assets=inputs.fingerprint,
            grouping=settings.strategy.grouping if access_point.method == "clustered" else "",
        )
        settings.tracking.check_pilots(access_point.n_pilots)
        _warn_deployment(settings)
        self.ledger = Ledger()
        self.history: list[dict[str, float]] = []
        self.failures: list[dict[str, object]] = []
        self.evaluation: dict[int, dict[str, float]] = {}
        self.ap_metrics: dict[str, float] = {}
        self._sent: set[int] = set()
        # users sent a training downlink in this run: their group and round at the last one
        self._trained_in: dict[int, int] = {}
        self._last_trained: dict[int, int] = {}
        # this round's replies as the AP keeps them, with their metrics (None: rejected)
        self._taken: dict[int, tuple[object, Mapping[str, float]]] = {}
        self._rejections: list[tuple[int, str]] = []
        self._started = time.perf_counter()
        self._round_started = self._started
        self.completed = 0  # training rounds done (more than 0 after resuming)
        # the deployment phase (tracking.*): its rows, the slots done, the AP's refresh
        # rounds, and per user its last G fit: the pilots (Nt·u × n), when (s) and on which
        # of them (columns; None: all); the fits sent and not yet answered
        self.tracking: list[dict[str, float]] = []
        self.slots_done = 0
        self.track_rounds_done = 0
        self._fits: dict[int, Fit] = {}
        self._proposed: dict[int, Fit] = {}
        self._phase, self._slot = TRAIN, 0
        self._evaluated = False
        self._rebuild: set[int] = set()  # resumed in the deployment phase: users without G
        self._refreshed: set[int] = set()  # the users a refresh reached in the current slot
        self.tracker: Tracker = Tracker()  # logger=none until track()
        self._tracked = ""  # the tracked run a checkpoint names (Tracker.ref)
        # a method that cannot restore its state (no restore()) is not checkpointed
        self._checkpoints = journal is not None and (
            type(access_point).restore is not AccessPoint.restore
        )
        if journal is not None and not self._checkpoints and access_point.num_rounds > 1:
            logger.warning(
                "%s cannot be checkpointed (no restore()): an interrupted run of "
                "it starts again from round 1",
                type(access_point).__name__,
            )

    def track(self, folder: str | Path | None) -> Tracker:
        """Start the experiment tracker ``logger.*`` names (after :meth:`resume`: the
        tracked run the checkpoint names goes on); ``folder`` is the run's output folder.
        A tracker's failures warn once and never stop the run (:mod:`common.run.trackers`)."""
        self.tracker = open_tracker(
            self.settings, folder, resumed=self._tracked, completed=self.completed
        )
        return self.tracker

    @property
    def rounds(self) -> range:
        """The training rounds still to run."""
        return range(self.completed + 1, self.ap.num_rounds + 1)

    @property
    def last_round(self) -> int:
        return self.ap.num_rounds

    # ---- training ----------------------------------------------------------------------
    def participants(self, rnd: int, users: Sequence[int]) -> list[int]:
        """The users trained with in round ``rnd``: all, or a fresh sample of
        ``⌈participation · K⌉`` of them (at least one) per round."""
        users = sorted(users)
        share = self.settings.consensus.participation
        if share >= 1 or not users:
            return users
        count = max(1, math.ceil(share * len(users)))
        chosen = rng(self.settings.seed, Stream.PARTICIPATION, rnd).choice(
            len(users), size=count, replace=False
        )
        return sorted(users[i] for i in chosen)

    def train_downlink(self, rnd: int, users: Sequence[int]) -> dict[int, Message]:
        """The messages of round ``rnd`` for this round's participants among the listed
        users (counted as sent)."""
        self._round_started = time.perf_counter()
        downlink = self.ap.train_messages(self.participants(rnd, users))
        self.ledger.record(TRAIN, rnd, DOWN, downlink)
        self._phase = TRAIN
        self._propose({k: m.signal for k, m in downlink.items()}, 0.0)
        self._sent = set(downlink)
        groups = self.ap.groups()
        self._trained_in.update({k: groups.get(k, 0) for k in downlink})
        self._last_trained.update(dict.fromkeys(downlink, rnd))
        self._taken, self._rejections = {}, []
        return downlink

    def take_train_reply(self, rnd: int, user: int, reply: TrainReply) -> None:
        """Count, check and absorb one user's reply of round ``rnd`` as it arrives.

        The AP keeps only what its update needs of it (:meth:`AccessPoint.absorb`, e.g.
        the federated AP's ``Nt·u × m`` local precoder instead of the ``Nt·u × n`` uplink),
        so a round of K users never holds K uplinks. A rejected reply (non-finite or
        wrongly shaped) is recorded as a failure when the round closes.

        Parameters
        ----------
        rnd : int
            The training round.
        user : int
            The replying user.
        reply : TrainReply
            Its uplink and metrics.
        """
        if self._phase == TRACK:  # a refresh round: counted under its slot
            self.ledger.record(TRACK, self._slot, UP, {user: reply.message})
        else:
            self.ledger.record(TRAIN, rnd, UP, {user: reply.message})
        try:
            self.ap.check_reply(user, reply.message)
            kept = self.ap.absorb(user, reply.message)
        except ValueError as exc:  # the user's failure, not the AP's
            self._rejections.append((user, f"uplink rejected: {exc}"))
            self._taken[user] = (None, reply.metrics)
            return
        self._taken[user] = (kept, reply.metrics)

    def finish_train_round(
        self, rnd: int, replies: Mapping[int, TrainReply], errors: Mapping[int, str]
    ) -> dict[str, float]:
        """Absorb the replies (those not taken already with :meth:`take_train_reply`),
        update the AP, record failures and silent users; returns the history row."""
        self.ap_metrics, failed, metrics, accepted = self._close_round(rnd, TRAIN, replies, errors)
        row = history_row(
            rnd, self.ap_metrics, metrics, failed, self.ledger, self.ap.whitening_loading
        )
        # users whose F_k the consensus rule cut at each end (trimmed_mean: ⌊β·accepted⌋)
        row["trimmed_per_end"] = self.ap.trimmed_per_end(list(accepted))
        row["groups"] = len(set(self.ap.groups().values()))
        effective = self.settings.link.channel_uses + self.info.side_channel_uses
        row["channel_uses_down"] = row["streams_down"] * self.ap.n_pilots * effective
        row["seconds"] = time.perf_counter() - self._round_started
        self.history.append(row)
        if rnd == self.last_round and row["power"] < 1e-6 * self.settings.link.power:
            logger.warning(
                "the precoder's power after the last round is %.3g, against a budget of %g: "
                "strategy.rho=%g holds F near zero and the users receive almost nothing; "
                "try a ρ nearer 1",
                row["power"],
                self.settings.link.power,
                self.settings.strategy.rho,
            )
        self.completed = rnd
        if self.journal is not None:  # what a crash or a full disk later cannot take away
            write_tables(self.journal, self._tables())
            self._checkpoint(rnd)
        self.tracker.log_round(rnd, row)  # after the checkpoint: a resumed run logs it once
        for k in sorted(metrics) if rnd == 1 else ():
            distinct = metrics[k].get("distinct_pilots", math.inf)
            if distinct <= metrics[k].get("whitened_dim", 0):
                logger.warning(
                    "user %d has only %d distinct pilots for a %d-dimensional whitened "
                    "latent: its whitening is mostly diagonal loading and alignment will be "
                    "poor",
                    k,
                    int(distinct),
                    int(metrics[k]["whitened_dim"]),
                )
        logger.info(
            "[%s] round %d/%d  objective=%.4g  residual=%.3g  power=%.3g  users=%d  "
            "failures=%d  (%.2f s)",
            self.info.method,
            rnd,
            self.last_round,
            row["objective"],
            row["primal_residual"],
            row["power"],
            row["responded"],
            failed,
            row["seconds"],
        )
        return row

    def _close_round(
        self, rnd: int, stage: str, replies: Mapping[int, TrainReply], errors: Mapping[int, str]
    ) -> tuple[dict[str, float], int, dict[int, Mapping[str, float]], dict[int, object]]:
        """Take the replies not taken yet, record the failures (``round`` ``rnd``, stage
        ``stage``) and update the AP: its metrics, the failure count, the users' metrics
        and the accepted replies."""
        for k in sorted(replies):
            if k not in self._taken:
                self.take_train_reply(rnd, k, replies[k])
        taken, self._taken = self._taken, {}
        rejections, self._rejections = self._rejections, []
        failed = self._record_failures(rnd, stage, taken, errors)
        for user, reason in sorted(rejections):
            self.failures.append({"round": rnd, "stage": stage, "user": user, "reason": reason})
            logger.warning("round %d: user %d: %s", rnd, user, reason)
        accepted = {k: kept for k, (kept, _) in sorted(taken.items()) if kept is not None}
        weights = {k: _reliability(taken[k][1]) for k in accepted}
        ap_metrics = self.ap.update(accepted, weights)
        metrics = {k: m for k, (_, m) in sorted(taken.items())}
        self._commit(metrics)  # a user that answered has fitted its G on the pilots
        return ap_metrics, failed + len(rejections), metrics, accepted

    def _tables(self) -> dict[str, pd.DataFrame]:
        """The history and failures so far, as the run's tables."""
        return {
            "history": pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS)),
            "failures": pd.DataFrame(self.failures, columns=list(FAILURE_COLUMNS)),
        }

    # ---- checkpoints ---------------------------------------------------------------------
    def _checkpoint(self, rnd: int) -> None:
        """Write the AP's state after round ``rnd`` to the journal folder. The last round is
        never checkpointed: the users' equalizers of that round are needed for the
        evaluation, so a run interrupted after it redoes it."""
        if not self._checkpoints or rnd >= self.last_round:
            return
        self._write_checkpoint(rnd)

    def _write_checkpoint(self, rnd: int, **deployment: Any) -> None:
        """The AP's state and the tables so far, after round ``rnd`` (and the deployment
        phase's ``deployment`` and ``deployment_arrays``, :meth:`_checkpoint_deployment`)."""
        Checkpoint(
            round=rnd,
            settings=self.settings.to_json(),
            ap_state=self.ap.precoders(),
            history=self.history,
            failures=self.failures,
            ledger=self.ledger.rows(),
            ap_metrics=self.ap_metrics,
            tracker=self.tracker.ref,
            **deployment,
        ).write(self.journal)

    def resume(self, folder: str | Path) -> int:
        """Continue from the checkpoint in ``folder``; the number of its completed round.

        Refused (:class:`CheckpointError`) if the folder has none, or one made with
        settings that change the numbers."""
        checkpoint = Checkpoint.read(folder)
        checkpoint.check_settings(self.settings, folder)
        try:
            self.ap.restore(checkpoint.ap_state)
        except (NotImplementedError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint in {folder} does not fit this AP: {exc}"
            ) from exc
        self.completed = checkpoint.round
        self.history = [dict(row) for row in checkpoint.history]
        self.failures = [dict(row) for row in checkpoint.failures]
        self.ledger = Ledger.from_rows(checkpoint.ledger, self.ap.groups())
        self.ap_metrics = dict(checkpoint.ap_metrics)
        self._tracked = checkpoint.tracker
        if checkpoint.deployment:
            self._resume_deployment(checkpoint)
        logger.info(
            "[%s] resuming after round %d of %d from %s",
            self.info.method,
            self.completed,
            self.last_round,
            folder,
        )
        return self.completed

    # ---- evaluation --------------------------------------------------------------------
    def test_downlink(self, users: Sequence[int]) -> dict[int, Message]:
        """The test transmission for the listed users (after the last round).

        A user that was never sent a training downlink in this run (never drawn under
        partial participation, or not since a resume), or whose group has changed since
        its last one (the clustered AP regrouped it), gets the pilots through the final
        precoder with it, to fit its equalizer on first, when its method has such a
        message (``REFIT_KIND``); the pilots' bytes are counted. A user that was sent
        pilots but failed is evaluated as it is (or fails again).
        """
        test = self.ap.test_messages(sorted(users))
        groups = self.ap.groups()
        untrained = [
            k for k in test if k not in self._trained_in or self._trained_in[k] != groups.get(k, 0)
        ]
        if untrained and self.ap.user_class.REFIT_KIND and self.ap.num_rounds > 0:
            pilots = self.ap.train_messages(untrained)
            refits: dict[tuple[int, int], AlignRefit] = {}  # one per group: one stream
            for k in untrained:
                key = (id(pilots[k]), id(test[k]))
                if key not in refits:
                    refits[key] = AlignRefit(pilots=pilots[k].signal, signal=test[k].signal)
                test[k] = refits[key]
            self._propose({k: pilots[k].signal for k in untrained}, 0.0)
        self._warn_stale([k for k in test if k not in untrained])
        self.ledger.record(EVALUATE, 0, DOWN, test)
        self._sent = set(test)
        return test

    def _warn_stale(self, users: Sequence[int]) -> None:
        """Warn of users whose equalizer was last fitted in the first half of the rounds
        (under partial participation): it was fitted to a precoder the consensus has
        since moved away from, and they decode the final one with it."""
        half = self.last_round // 2
        stale = sorted(k for k in users if self._last_trained.get(k, self.last_round) <= half)
        if not stale or self.last_round < 2:
            return
        shown = ", ".join(map(str, stale[:10])) + (", …" if len(stale) > 10 else "")
        logger.warning(
            "%d user(s) (%s) last fitted their equalizer in round %d or earlier of %d, to "
            "a precoder the consensus has since moved away from; their accuracy may be "
            "near chance (consensus.participation=%g: more rounds or a higher "
            "participation draw them again)",
            len(stale),
            shown,
            half,
            self.last_round,
            self.settings.consensus.participation,
        )

    def finish_evaluation(
        self, evaluations: Mapping[int, Mapping[str, float]], errors: Mapping[int, str]
    ) -> dict[str, float]:
        """Keep each user's task metrics; returns the mean accuracy and the failure count."""
        failed = self._record_failures(self.last_round, EVALUATE, evaluations, errors)
        self.evaluation = {k: dict(evaluations[k]) for k in sorted(evaluations)}
        self._evaluated = True
        self._commit(evaluations)
        self._refreshed = set()
        if self.journal is not None:  # a kill in slot 1 goes on from here
            self._checkpoint_deployment()
        accuracies = [m["accuracy"] for m in self.evaluation.values()]
        mean = float(np.mean(accuracies)) if accuracies else math.nan
        logger.info(
            "[%s] evaluated %d users: mean accuracy %.4f", self.info.method, len(accuracies), mean
        )
        return {"mean_accuracy": mean, "failures": failed}

    def _record_failures(
        self, rnd: int, stage: str, answered: Mapping[int, object], errors: Mapping[int, str]
    ) -> int:
        """Errors of the users sent to, and those that neither answered nor failed as 'no
        reply'. A user sent nothing this round cannot fail in it (a transport that serves
        several points may report a node's error for all of them)."""
        errors = {k: reason for k, reason in errors.items() if k in self._sent}
        silent = {k: "no reply" for k in self._sent - set(answered) - set(errors)}
        for user, reason in sorted({**errors, **silent}.items()):
            self.failures.append({"round": rnd, "stage": stage, "user": user, "reason": reason})
            logger.warning("round %d %s: user %d failed: %s", rnd, stage, user, reason[:200])
        return len(errors) + len(silent)

    @property
    def evaluated(self) -> bool:
        """Whether the evaluation after the last round is done (in this process, or before
        a resume into the deployment phase)."""
        return self._evaluated

    # ---- deployment (tracking.*) ---------------------------------------------------------
    def _propose(
        self, signals: Mapping[int, np.ndarray], when: float, columns: np.ndarray | None = None
    ) -> None:
        """The G fit a downlink makes for each user (its pilots, the channel's time, which
        pilots), kept once the user answers (:meth:`_commit`): what an equalizer refresh
        re-sends, and what rebuilds a resumed user's G."""
        if self.settings.tracking.slots:
            self._proposed.update({k: Fit(signal, when, columns) for k, signal in signals.items()})

    def _commit(self, answered: Iterable[int]) -> None:
        """The proposed fits of the users that answered become their fits."""
        for k in answered:
            if k in self._proposed:
                self._fits[k] = self._proposed[k]
                if self._evaluated:  # a deployment phase's refresh reached k
                    self._refreshed.add(k)
        self._proposed = {}

    @property
    def slots(self) -> range:
        """The deployment slots still to run (none without ``tracking.slots``)."""
        return range(self.slots_done + 1, self.settings.tracking.slots + 1)

    def track_rounds(self, slot: int) -> range:
        """The ``full`` refresh rounds that open ``slot`` (none under another policy, or in
        a slot no refresh opens)."""
        return range(self.settings.tracking.refresh_rounds(slot))

    def track_downlink(self, slot: int, users: Sequence[int]) -> dict[int, Message]:
        """A ``full`` refresh round's training downlink for this round's participants
        (``consensus.participation``, drawn as a training round numbered after the last):
        ``F X̄`` over the channel of ``slot`` (:class:`AlignTrack`), counted under the
        ``track`` phase of the slot. Take the replies with :meth:`take_train_reply`."""
        rnd = self.last_round + self.track_rounds_done + 1
        self._round_started = time.perf_counter()
        when = self.settings.tracking.time(slot)
        pilots = self.ap.train_messages(self.participants(rnd, users))
        tracked: dict[int, AlignTrack] = {}
        downlink = {}
        for k, message in pilots.items():
            if id(message) not in tracked:
                tracked[id(message)] = AlignTrack(
                    signal=message.signal,
                    slot=np.array([slot], dtype=np.int64),
                    time=np.array([when]),
                )
            downlink[k] = tracked[id(message)]
        self.ledger.record(TRACK, slot, DOWN, pilots)  # the pilots: what the refresh costs
        self._phase, self._slot = TRACK, slot
        self._propose({k: m.signal for k, m in pilots.items()}, when)
        self._sent = set(downlink)
        self._taken, self._rejections = {}, []
        return downlink

    def finish_track_round(
        self, slot: int, replies: Mapping[int, TrainReply], errors: Mapping[int, str]
    ) -> None:
        """Close a ``full`` refresh round: the AP's warm-started ADMM update on the replies
        (failures recorded under stage ``track``, round: the slot)."""
        self._close_round(slot, TRACK, replies, errors)
        self._phase = TRAIN
        self.track_rounds_done += 1
        logger.debug(
            "[%s] slot %d: refresh round %d (%.2f s)",
            self.info.method,
            slot,
            self.track_rounds_done,
            time.perf_counter() - self._round_started,
        )

    def _refresh_columns(self, slot: int) -> np.ndarray:
        """The pilots an equalizer refresh of ``slot`` sends: all ``n`` in order, or
        ``tracking.pilots`` of them drawn from ``rng(seed, REFRESH, 0, slot)``, sorted."""
        n, p = self.ap.n_pilots, self.settings.tracking.pilots
        if p is None or p >= n:
            return np.arange(n, dtype=np.int64)
        chosen = rng(self.settings.seed, Stream.REFRESH, 0, slot).choice(n, size=p, replace=False)
        return np.sort(chosen).astype(np.int64)

    def slot_downlink(self, slot: int, users: Sequence[int]) -> dict[int, Message]:
        """Slot ``slot``'s transmissions (:class:`AlignSlot`): the test set through the
        final precoder over the channel at ``t_s``, with an equalizer refresh's pilots
        when one opens the slot. The test data are counted under the ``slot`` phase, the
        refresh's pilots under ``refresh`` (the pilot indices it names are not: every user
        can draw them from the seed and the slot). After a resume, a user that has not
        answered a slot since is also sent what rebuilds its equalizer (its last fit's
        pilots, uncounted: a device keeps its G)."""
        t = self.settings.tracking
        when = t.time(slot)
        test = self.ap.test_messages(sorted(users))
        refresh = t.policy == "equalizer" and t.refreshes(slot)
        columns = self._refresh_columns(slot) if refresh else None
        empty = Fit(np.zeros((self.settings.link.tx_dim, 0), dtype=np.complex128), when, None)
        built: dict[tuple, AlignSlot] = {}
        refits: dict[int, np.ndarray] = {}
        out = {}
        for k, message in test.items():
            fit = self._fits.get(k)
            if fit is not None and refresh:
                fit = Fit(fit.signal, when, columns)
                refits[k] = fit.signal
            elif fit is None or k not in self._rebuild:
                fit = empty
            cols = np.arange(fit.signal.shape[1]) if fit.columns is None else fit.columns
            key = (id(message), id(fit.signal), fit.time)
            if key not in built:
                built[key] = AlignSlot(
                    signal=message.signal,
                    slot=np.array([slot], dtype=np.int64),
                    time=np.array([when]),
                    pilots=np.ascontiguousarray(fit.signal[:, cols]),
                    columns=cols.astype(np.int64),
                    fit_time=np.array([fit.time]),
                )
            out[k] = built[key]
        self._propose(refits, when, columns)
        self.ledger.record(
            SLOT, slot, DOWN, {k: AlignTest(signal=m.signal) for k, m in out.items()}
        )
        # the refresh's pilots, one stream per distinct precoder (its message object)
        pilots: dict[int, AlignPilots] = {}
        for k in refits:
            if id(out[k]) not in pilots:
                pilots[id(out[k])] = AlignPilots(signal=out[k].pilots)
        self.ledger.record(REFRESH, slot, DOWN, {k: pilots[id(out[k])] for k in refits})
        self._sent = set(out)
        return out

    def finish_slot(
        self, slot: int, evaluations: Mapping[int, Mapping[str, float]], errors: Mapping[int, str]
    ) -> dict[str, float]:
        """Record slot ``slot``'s accuracy and MSE per user, with the overhead the refreshes
        have cost so far (``tracking.csv``), and checkpoint the deployment phase; returns
        the slot's mean accuracy and failure count."""
        failed = self._record_failures(slot, SLOT, evaluations, errors)
        self._commit(evaluations)
        self._rebuild -= set(evaluations)  # they hold their G again
        when = self.settings.tracking.time(slot)
        overhead = self.ledger.user_totals((REFRESH, TRACK))
        effective = self.settings.link.channel_uses + self.info.side_channel_uses
        symbols = self.settings.link.tx_dim * np.dtype(np.complex128).itemsize  # per pilot
        accuracies = []
        for k in sorted(evaluations):
            spent = overhead.get(k, {"bytes_down": 0, "bytes_up": 0})
            pilots = spent["bytes_down"] // symbols
            accuracies.append(float(evaluations[k]["accuracy"]))
            self.tracking.append(
                {
                    "slot": slot,
                    "time_s": when,
                    "user": k,
                    "accuracy": float(evaluations[k]["accuracy"]),
                    "mse": float(evaluations[k]["mse"]),
                    "refreshed": int(k in self._refreshed),
                    "overhead_pilots": pilots,
                    "overhead_rounds": self.track_rounds_done,
                    "overhead_bytes_down": spent["bytes_down"],
                    "overhead_bytes_up": spent["bytes_up"],
                    "overhead_channel_uses": pilots * effective,
                }
            )
        self.slots_done = slot
        self._refreshed = set()
        if self.journal is not None:
            write_tables(self.journal, {**self._tables(), "tracking": self._tracking_table()})
            self._checkpoint_deployment()
        mean = float(np.mean(accuracies)) if accuracies else math.nan
        logger.info(
            "[%s] slot %d/%d (t = %.4g ms): mean accuracy %.4f",
            self.info.method,
            slot,
            self.settings.tracking.slots,
            1e3 * when,
            mean,
        )
        return {"mean_accuracy": mean, "failures": failed}

    def _tracking_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.tracking, columns=list(TRACKING_COLUMNS))

    def _checkpoint_deployment(self) -> None:
        """After the evaluation and each slot but the last (with a deployment phase): the
        AP's state, the evaluation, the slots' rows and each user's last G fit (when, on
        which pilots, and those pilots, each distinct signal once), so that a resumed run
        goes on with the next slot."""
        slots = self.settings.tracking.slots
        if not self._checkpoints or not slots or self.slots_done >= slots:
            return
        signals: dict[int, int] = {}
        arrays: dict[str, np.ndarray] = {}
        fits = {}
        for k, fit in sorted(self._fits.items()):
            if id(fit.signal) not in signals:
                signals[id(fit.signal)] = len(signals)
                arrays[f"pilots.{signals[id(fit.signal)]}"] = fit.signal
            columns = None if fit.columns is None else fit.columns.tolist()
            fits[str(k)] = [signals[id(fit.signal)], fit.time, columns]
        self._write_checkpoint(
            self.completed,
            deployment={
                "slot": self.slots_done,
                "track_rounds": self.track_rounds_done,
                "evaluation": {str(k): v for k, v in self.evaluation.items()},
                "tracking": self.tracking,
                "fits": fits,
                "rebuild": sorted(self._rebuild),
            },
            deployment_arrays=arrays,
        )

    def _resume_deployment(self, checkpoint: Checkpoint) -> None:
        """Take back the deployment phase from ``checkpoint`` (made after the evaluation or
        a slot); every user with a fit rebuilds its G in the next slot it answers."""
        state = checkpoint.deployment
        self.slots_done = int(state["slot"])
        self.track_rounds_done = int(state["track_rounds"])
        self.evaluation = {int(k): dict(v) for k, v in state["evaluation"].items()}
        self.tracking = [dict(row) for row in state["tracking"]]
        for k, (index, when, columns) in state["fits"].items():
            cols = None if columns is None else np.asarray(columns, dtype=np.int64)
            signal = checkpoint.deployment_arrays[f"pilots.{index}"]
            self._fits[int(k)] = Fit(signal, float(when), cols)
        self._evaluated = True
        self._rebuild = set(self._fits)

    # ---- outcome -----------------------------------------------------------------------
    def outcome(self, precoders: Mapping[str, np.ndarray] | None = None) -> RunOutcome:
        """The run's tables; ``precoders`` default to the AP's own."""
        wall = time.perf_counter() - self._started
        return RunOutcome(
            results=result_rows(
                self.info, self.evaluation, self.ap_metrics, self.ledger, wall, self.ap.groups()
            ),
            **self._tables(),
            precoders=dict(self.ap.precoders() if precoders is None else precoders),
            wall_time_s=wall,
            tracking=self._tracking_table(),
        )

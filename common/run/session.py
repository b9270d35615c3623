"""One run's rounds, described once for every transport.

A :class:`Session` is the AP side of one experiment without any notion of how
messages travel: which messages go to whom each round, what is done with the
replies, what is recorded (overhead ledger, history, failures, evaluation).
A transport only delivers them. The in-process driver calls users directly;
the Flower strategy sends Flower messages to SuperNodes. Both drive the same
loop::

    for rnd in session.rounds:
        downlink = session.train_downlink(rnd, users)
        ...deliver, collect replies and errors...
        session.finish_train_round(rnd, replies, errors)
    test = session.test_downlink(users)
    ...deliver, collect evaluations and errors...
    session.finish_evaluation(evaluations, errors)
    outcome = session.outcome()
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from common.maths.conventions import Conventions
from common.parties.access_point import AccessPoint, access_point_class
from common.parties.ledger import DOWN, UP, Ledger
from common.parties.protocol import Message
from common.parties.user import TrainReply, User, UserData
from common.run.results import (
    FAILURE_COLUMNS,
    HISTORY_COLUMNS,
    RunInfo,
    RunOutcome,
    history_row,
    result_rows,
)
from common.run.settings import RunSettings
from common.run.sources import APInputs

logger = logging.getLogger(__name__)

TRAIN, EVALUATE = "train", "evaluate"


def build_access_point(
    settings: RunSettings, inputs: APInputs, users: Sequence[int]
) -> AccessPoint:
    """The AP of ``settings.method`` over its own inputs, every draw fixed by ``settings.seed``."""
    return access_point_class(settings.method)(
        inputs.pilots,
        inputs.test,
        settings.link,
        users,
        rounds=settings.rounds,
        rho=settings.rho,
        seed=settings.seed,
        conventions=Conventions(settings.conventions),
    )


def build_user(settings: RunSettings, index: int, data: UserData) -> User:
    """User ``index`` of the method's own user class (the AP class names it)."""
    user_class = access_point_class(settings.method).user_class
    return user_class(
        index, data, settings.link, settings.seed, conventions=Conventions(settings.conventions)
    )


class Session:
    """The AP side of one run: rounds, bookkeeping and the outcome."""

    def __init__(self, access_point: AccessPoint, settings: RunSettings, inputs: APInputs):
        self.ap = access_point
        self.settings = settings
        self.info = RunInfo(
            method=access_point.method or settings.method,
            dataset=inputs.dataset,
            seed=settings.seed,
            ap_model=inputs.model,
            latent_dim_ap=access_point.dim,
            user_models=dict(enumerate(settings.models)),
            link=settings.link,
            pilot_fraction=settings.pilot_fraction,
            n_pilots=access_point.n_pilots,
            rounds=access_point.num_rounds,
            side_channel_uses=access_point.side_channel_uses(),
            user_group=settings.group,
        )
        self.ledger = Ledger()
        self.history: list[dict[str, float]] = []
        self.failures: list[dict[str, object]] = []
        self.evaluation: dict[int, dict[str, float]] = {}
        self.ap_metrics: dict[str, float] = {}
        self._sent: set[int] = set()
        self._started = time.perf_counter()
        self._round_started = self._started

    @property
    def rounds(self) -> range:
        return range(1, self.ap.num_rounds + 1)

    @property
    def last_round(self) -> int:
        return self.ap.num_rounds

    # ---- training ----------------------------------------------------------------------
    def train_downlink(self, rnd: int, users: Sequence[int]) -> dict[int, Message]:
        """The messages of round ``rnd`` for the listed users (counted as sent)."""
        self._round_started = time.perf_counter()
        downlink = self.ap.train_messages(sorted(users))
        self.ledger.record(TRAIN, rnd, DOWN, downlink)
        self._sent = set(downlink)
        return downlink

    def finish_train_round(
        self, rnd: int, replies: Mapping[int, TrainReply], errors: Mapping[int, str]
    ) -> dict[str, float]:
        """Absorb the replies, record failures and silent users; returns the history row."""
        failed = self._record_failures(rnd, TRAIN, replies, errors)
        uplink = {k: replies[k].message for k in sorted(replies)}
        self.ledger.record(TRAIN, rnd, UP, uplink)
        self.ap_metrics = self.ap.update(uplink)
        metrics = {k: replies[k].metrics for k in sorted(replies)}
        row = history_row(
            rnd, self.ap_metrics, metrics, failed, self.ledger, self.ap.whitening_loading
        )
        row["seconds"] = time.perf_counter() - self._round_started
        self.history.append(row)
        logger.info(
            "[%s] round %d/%d  objective=%.4g  residual=%.3g  power=%.3g  users=%d  "
            "failures=%d  (%.2f s)",
            self.info.method, rnd, self.last_round, row["objective"], row["primal_residual"],
            row["power"], row["responded"], failed, row["seconds"],
        )  # fmt: skip
        return row

    # ---- evaluation --------------------------------------------------------------------
    def test_downlink(self, users: Sequence[int]) -> dict[int, Message]:
        """The test transmission for the listed users (after the last round)."""
        test = self.ap.test_messages(sorted(users))
        self.ledger.record(EVALUATE, 0, DOWN, test)
        self._sent = set(test)
        return test

    def finish_evaluation(
        self, evaluations: Mapping[int, Mapping[str, float]], errors: Mapping[int, str]
    ) -> dict[str, float]:
        """Keep each user's task metrics; returns the mean accuracy and the failure count."""
        failed = self._record_failures(self.last_round, EVALUATE, evaluations, errors)
        self.evaluation = {k: dict(evaluations[k]) for k in sorted(evaluations)}
        accuracies = [m["accuracy"] for m in self.evaluation.values()]
        mean = float(np.mean(accuracies)) if accuracies else math.nan
        logger.info("[%s] evaluated %d users: mean accuracy %.4f", self.info.method,
                    len(accuracies), mean)  # fmt: skip
        return {"mean_accuracy": mean, "failures": failed}

    def _record_failures(
        self, rnd: int, stage: str, answered: Mapping[int, object], errors: Mapping[int, str]
    ) -> int:
        """Errors as reported, users sent to that neither answered nor failed as 'no reply'."""
        silent = {k: "no reply" for k in self._sent - set(answered) - set(errors)}
        for user, reason in sorted({**errors, **silent}.items()):
            self.failures.append({"round": rnd, "stage": stage, "user": user, "reason": reason})
            logger.warning("round %d %s: user %d failed: %s", rnd, stage, user, reason[:200])
        return len(errors) + len(silent)

    # ---- outcome -----------------------------------------------------------------------
    def outcome(self, precoders: Mapping[str, np.ndarray] | None = None) -> RunOutcome:
        """The run's tables; ``precoders`` default to the AP's own."""
        wall = time.perf_counter() - self._started
        return RunOutcome(
            results=result_rows(self.info, self.evaluation, self.ap_metrics, self.ledger, wall),
            history=pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS)),
            failures=pd.DataFrame(self.failures, columns=list(FAILURE_COLUMNS)),
            precoders=dict(self.ap.precoders() if precoders is None else precoders),
            wall_time_s=wall,
        )

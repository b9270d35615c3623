"""The access point as a Flower strategy: a thin adapter around an AccessPoint.

Each round the strategy asks the AP for its downlink messages, sends each one
to the node that runs the matching user, and hands the replies back to the AP.
Users that fail or do not answer are counted and left out of that round's
update; the run goes on with the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.access_point import AccessPoint
from common.overhead import DOWN, UP, Ledger
from common.results import HISTORY_COLUMNS, RunInfo, history_row, result_rows
from server import wire

logger = logging.getLogger(__name__)


class UsersNotConnected(RuntimeError):
    """Fewer users than configured joined the federation in time."""


class AlignmentStrategy(Strategy):
    """Drives any :class:`AccessPoint` over a Flower grid."""

    def __init__(
        self,
        access_point: AccessPoint,
        info: RunInfo,
        *,
        node_wait_timeout: float = 300.0,
        progress: bool = True,
    ) -> None:
        self.ap = access_point
        self.info = info
        self.node_wait_timeout = node_wait_timeout
        self.progress = progress
        self.ledger = Ledger()
        self.history: list[dict[str, float]] = []
        self.evaluation: dict[int, dict[str, float]] = {}
        self.failures: list[dict[str, object]] = []
        self.ap_metrics: dict[str, float] = {}
        self.user_nodes: dict[int, int] = {}  # user index (partition-id) -> node id
        self._sent: dict[int, int] = {}  # node id -> user of the messages in flight
        self._round_start = 0.0

    # ---- nodes -----------------------------------------------------------------------------
    def summary(self) -> None:
        logger.info(
            "AlignmentStrategy: method=%s users=%d rounds=%d",
            self.ap.method,
            len(self.ap.users),
            self.ap.num_rounds,
        )

    def connect(self, grid: Grid) -> dict[int, int]:
        """Wait for every configured user and learn which node runs which user.

        Node ids are opaque, so each new node is asked for its ``partition-id``
        (its user index) once.
        """
        wanted = set(self.ap.users)
        deadline = time.monotonic() + self.node_wait_timeout
        asked: set[int] = set()
        while not wanted <= set(self.user_nodes):
            new = [n for n in grid.get_node_ids() if n not in asked]
            if new:
                asked.update(new)
                queries = [
                    Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in new
                ]
                for reply in grid.send_and_receive(queries, timeout=self.node_wait_timeout):
                    if reply.has_error():
                        logger.warning(
                            "node %s did not identify itself", reply.metadata.src_node_id
                        )
                        continue
                    user = int(reply.content[wire.METRICS]["partition-id"])
                    if user in wanted:
                        self.user_nodes[user] = reply.metadata.src_node_id
            elif time.monotonic() > deadline:
                missing = sorted(wanted - set(self.user_nodes))
                raise UsersNotConnected(
                    f"users {missing} did not connect within {self.node_wait_timeout:.0f} s; "
                    "start one SuperNode per user with node config "
                    f"partition-id=0..{len(wanted) - 1}"
                )
            else:
                time.sleep(0.1)
        return self.user_nodes

    def _messages(self, rnd: int, downlink, message_type: str) -> list[Message]:
        self._sent = {self.user_nodes[k]: k for k in downlink}
        return [
            Message(
                wire.encode(message, round=rnd),
                dst_node_id=self.user_nodes[k],
                message_type=message_type,
                group_id=str(rnd),
            )
            for k, message in downlink.items()
        ]

    def _collect(self, rnd: int, stage: str, replies: Iterable[Message]):
        """Split replies into (user -> content) and count failures and silent users."""
        good: dict[int, RecordDict] = {}
        errored: set[int] = set()
        for reply in replies:
            user = self._sent.get(reply.metadata.src_node_id)
            if user is None:
                continue
            if reply.has_error():
                reason = reply.error.reason.rsplit("Message: ", 1)[-1].strip()
                errored.add(user)
                self.failures.append({"round": rnd, "stage": stage, "user": user, "reason": reason})
                logger.warning("round %d %s: user %d failed: %s", rnd, stage, user, reason[:200])
            else:
                good[user] = reply.content
        for user in sorted(set(self._sent.values()) - set(good) - errored):
            self.failures.append({"round": rnd, "stage": stage, "user": user, "reason": "no reply"})
        return good, len(self._sent) - len(good)

    # ---- training --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._round_start = time.perf_counter()
        self.connect(grid)
        downlink = self.ap.train_messages(sorted(self.user_nodes))
        self.ledger.record("train", server_round, DOWN, downlink)
        return self._messages(server_round, downlink, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good, failures = self._collect(server_round, "train", replies)
        uplink = {k: wire.decode(good[k]) for k in sorted(good)}
        metrics = {k: dict(good[k][wire.METRICS]) for k in sorted(good)}
        self.ledger.record("train", server_round, UP, uplink)
        self.ap_metrics = self.ap.update(uplink)
        row = history_row(
            server_round, self.ap_metrics, metrics, failures, self.ledger, self.ap.whitening_loading
        )
        row["seconds"] = time.perf_counter() - self._round_start
        self.history.append(row)
        if self.progress:
            print(
                f"[{self.ap.method}] round {server_round}/{self.ap.num_rounds}  "
                f"objective={row['objective']:.4g}  residual={row['primal_residual']:.3g}  "
                f"power={row['power']:.3g}  users={row['responded']}  failures={failures}  "
                f"({row['seconds']:.2f} s)",
                flush=True,
            )
        return wire.array_record(self.ap.precoders()), wire.metric_record(row)

    # ---- evaluation (after the last round) -------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if server_round < self.ap.num_rounds:
            self._sent = {}  # nothing in flight: no user can be missing
            return []
        test = self.ap.test_messages(sorted(self.user_nodes))
        self.ledger.record("evaluate", 0, DOWN, test)
        return self._messages(server_round, test, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        good, failures = self._collect(server_round, "evaluate", replies)
        self.evaluation = {k: dict(good[k][wire.METRICS]) for k in sorted(good)}
        if not self.evaluation:
            return None
        accuracy = sum(m["accuracy"] for m in self.evaluation.values()) / len(self.evaluation)
        return MetricRecord({"mean_accuracy": accuracy, "failures": failures})

    # ---- outputs ---------------------------------------------------------------------------
    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.history, columns=[*HISTORY_COLUMNS, "seconds"])

    def results_frame(self, wall_time_s: float) -> pd.DataFrame:
        return result_rows(self.info, self.evaluation, self.ap_metrics, self.ledger, wall_time_s)

    def failures_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.failures, columns=["round", "stage", "user", "reason"])

"""The access point as a Flower strategy: a transport for one :class:`Session`.

The session says which messages go to which user each round and what to do
with the replies; this strategy only turns them into Flower messages for the
SuperNodes that run those users, and turns the replies back. Users that fail
or do not answer are recorded by the session and left out of that round's
update; the run goes on with the others.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.parties import protocol
from common.parties.user import TrainReply
from common.run.session import Session

logger = logging.getLogger(__name__)


class UsersNotConnected(RuntimeError):
    """Fewer users than configured joined the federation in time."""


def encode(message: protocol.Message, **config: int | str) -> RecordDict:
    """A protocol message as Flower records: its arrays in order, its kind in the config."""
    return RecordDict({
        protocol.ARRAYS: ArrayRecord(numpy_ndarrays=message.to_list()),
        protocol.CONFIG: ConfigRecord({"kind": message.KIND, **config}),
    })  # fmt: skip


def decode(content: RecordDict) -> protocol.Message:
    """The protocol message a user sent back."""
    kind = str(content[protocol.CONFIG]["kind"])
    return protocol.message_class(kind).from_list(content[protocol.ARRAYS].to_numpy_ndarrays())


def error_reason(reply: Message) -> str:
    """The user's own exception text out of Flower's error reason."""
    return reply.error.reason.rsplit("Message: ", 1)[-1].strip()


class AlignmentStrategy(Strategy):
    """Drives a :class:`Session` (any access point) over a Flower grid."""

    def __init__(
        self,
        session: Session,
        *,
        node_wait_timeout: float = 300.0,
        user_nodes: dict[int, int] | None = None,
    ) -> None:
        self.session = session
        self.node_wait_timeout = node_wait_timeout
        # user index (partition-id) -> node id; shared by the cells of a sweep
        self.user_nodes: dict[int, int] = {} if user_nodes is None else user_nodes
        self._evaluating = False
        # every message names its run, so a node serving a sweep rebuilds its user per cell
        self._settings = session.settings.to_json()

    @property
    def users(self) -> tuple[int, ...]:
        return self.session.ap.users

    def summary(self) -> None:
        logger.info(
            "AlignmentStrategy: method=%s users=%d rounds=%d",
            self.session.info.method, len(self.users), self.session.last_round,
        )  # fmt: skip

    # ---- nodes -----------------------------------------------------------------------------
    def connect(self, grid: Grid) -> dict[int, int]:
        """Wait for every configured user and learn which node runs which user.

        Node ids are opaque, so each new node is asked for its ``partition-id``
        (its user index) once.
        """
        wanted = set(self.users)
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
                    user = int(reply.content[protocol.METRICS]["partition-id"])
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

    def _messages(
        self, rnd: int, downlink: Mapping[int, protocol.Message], message_type: str
    ) -> list[Message]:
        return [
            Message(
                encode(message, round=rnd, settings=self._settings),
                dst_node_id=self.user_nodes[k],
                message_type=message_type,
                group_id=str(rnd),
            )
            for k, message in downlink.items()
        ]

    def _split(self, replies: Iterable[Message]) -> tuple[dict[int, RecordDict], dict[int, str]]:
        """Replies by user: contents of the good ones, reasons of the errors."""
        node_users = {node: user for user, node in self.user_nodes.items()}
        good: dict[int, RecordDict] = {}
        errors: dict[int, str] = {}
        for reply in replies:
            user = node_users.get(reply.metadata.src_node_id)
            if user is None:
                continue
            if reply.has_error():
                errors[user] = error_reason(reply)
            else:
                good[user] = reply.content
        return good, errors

    # ---- training --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.connect(grid)
        downlink = self.session.train_downlink(server_round, sorted(self.user_nodes))
        return self._messages(server_round, downlink, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good, errors = self._split(replies)
        answers = {
            k: TrainReply(decode(content), dict(content[protocol.METRICS]))
            for k, content in good.items()
        }
        row = self.session.finish_train_round(server_round, answers, errors)
        precoders = ArrayRecord({k: Array(v) for k, v in self.session.ap.precoders().items()})
        return precoders, MetricRecord({k: v for k, v in row.items() if math.isfinite(v)})

    # ---- evaluation (after the last round) -------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._evaluating = server_round >= self.session.last_round
        if not self._evaluating:
            return []
        test = self.session.test_downlink(sorted(self.user_nodes))
        return self._messages(server_round, test, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        if not self._evaluating:
            return None
        good, errors = self._split(replies)
        evaluations = {k: dict(content[protocol.METRICS]) for k, content in good.items()}
        summary = self.session.finish_evaluation(evaluations, errors)
        return MetricRecord({k: v for k, v in summary.items() if math.isfinite(v)})

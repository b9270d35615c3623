"""The access point as a Flower strategy: a transport for one or more :class:`Session`.

Each session says which messages go to which user each round and what to do
with the replies; this strategy only turns them into Flower messages for the
SuperNodes that run those users, and turns the replies back. Users that fail
or do not answer are recorded by the session and left out of that round's
update; the run goes on with the others.

Several sessions (cells of a sweep with the same users and number of rounds)
can run in lockstep: each round, every node gets one message that carries one
entry per cell (records ``arrays.<i>``, ``config.<i>``, and ``metrics.<i>`` in
the reply). Flower's fixed cost per round (message dispatch, polling, the
context's trip to the worker) is then paid once for all of them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence

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
from common.run.cells import cell_key
from common.run.session import Session

logger = logging.getLogger(__name__)


class UsersNotConnected(RuntimeError):
    """Fewer users than configured joined the federation in time."""


class NodeRefused(RuntimeError):
    """A node cannot serve the run (its node config, model or assets); names the reason."""


# How long a round waits for the nodes that joined since the last one to say who they are.
QUERY_TIMEOUT_S = 30.0


def encode(
    message: protocol.Message, index: int = 0, into: RecordDict | None = None,
    *, arrays: ArrayRecord | None = None, **config: int | str,
) -> RecordDict:  # fmt: skip
    """Add ``message`` as the ``index``-th entry of ``into`` (a new RecordDict by default):
    its arrays in order (``arrays``: already encoded), its kind and ``config`` in the
    entry's config."""
    content = RecordDict() if into is None else into
    if arrays is None:
        arrays = ArrayRecord(numpy_ndarrays=message.to_list())
    content[protocol.entry(protocol.ARRAYS, index)] = arrays
    content[protocol.entry(protocol.CONFIG, index)] = ConfigRecord({"kind": message.KIND, **config})
    return content


def decode(content: RecordDict, index: int = 0) -> protocol.Message:
    """The protocol message in entry ``index``."""
    kind = str(content[protocol.entry(protocol.CONFIG, index)]["kind"])
    arrays = content[protocol.entry(protocol.ARRAYS, index)].to_numpy_ndarrays()
    return protocol.message_class(kind).from_list(arrays)


def error_reason(reply: Message) -> str:
    """The user's own exception text out of Flower's error reason."""
    return reply.error.reason.rsplit("Message: ", 1)[-1].strip()


class AlignmentStrategy(Strategy):
    """Drives one or more :class:`Session` (any access point) in lockstep over a Flower grid."""

    def __init__(
        self,
        sessions: Sequence[Session],
        *,
        node_wait_timeout: float = 300.0,
        user_nodes: dict[int, int] | None = None,
        group_size: int | None = None,
    ) -> None:
        if not sessions:
            raise ValueError("a strategy needs at least one session")
        shape = {(s.ap.users, s.last_round, s.completed) for s in sessions}
        if len(shape) > 1:
            raise ValueError(
                "sessions run in lockstep must share their users, number of rounds and "
                f"completed rounds, got {sorted(shape)}"
            )
        # Flower counts this strategy's rounds from 1; a resumed run goes on after its
        # completed rounds
        self.offset = sessions[0].completed
        self.sessions = list(sessions)
        self.node_wait_timeout = node_wait_timeout
        # user index (partition-id) -> node id; shared by the cells of a sweep
        self.user_nodes: dict[int, int] = {} if user_nodes is None else user_nodes
        self._asked: set[int] = set(self.user_nodes.values())
        # node indices from here on are a misconfigured device (a simulation of a sweep has
        # as many nodes as its largest cell has users)
        self.group_size = len(self.users) if group_size is None else group_size
        self._evaluating = False
        # every entry names its cell, so a node serving a sweep rebuilds its user per cell
        self._settings = [session.settings.to_json() for session in self.sessions]
        self._live = ConfigRecord({"cells": [cell_key(s.settings) for s in self.sessions]})

    @property
    def users(self) -> tuple[int, ...]:
        return self.sessions[0].ap.users

    @property
    def last_round(self) -> int:
        return self.sessions[0].last_round

    @property
    def rounds_to_run(self) -> int:
        """Flower rounds this strategy drives (fewer than ``last_round`` after a resume)."""
        return self.last_round - self.offset

    def summary(self) -> None:
        logger.info(
            "AlignmentStrategy: %d cell(s) (%s), users=%d, rounds=%d",
            len(self.sessions), ", ".join(sorted({s.info.method for s in self.sessions})),
            len(self.users), self.last_round,
        )  # fmt: skip

    # ---- nodes -----------------------------------------------------------------------------
    def connect(self, grid: Grid) -> dict[int, int]:
        """Learn which node runs which user: at the start, wait until every user's node has
        joined; later, only ask nodes that joined since (a SuperNode that came back after a
        failure, under a new node id, takes its user over at the next round).

        Node ids are opaque, so each new node is asked once for its ``partition-id``; the
        query names the run, so a device that cannot serve it (its model, its assets, its
        index) says why at once and the run stops with that reason.
        """
        wanted = set(self.users)
        if wanted <= set(self.user_nodes):  # under way: a node that fails now fails alone
            self._identify(grid, QUERY_TIMEOUT_S, strict=False)
            return self.user_nodes
        deadline = time.monotonic() + self.node_wait_timeout
        while not wanted <= set(self.user_nodes):
            if self._identify(grid, self.node_wait_timeout):
                continue
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(self.user_nodes))
                raise UsersNotConnected(
                    f"users {missing} did not connect within {self.node_wait_timeout:.0f} s; "
                    "start one SuperNode per user with node config "
                    f"partition-id=0..{len(wanted) - 1}"
                )
            time.sleep(0.1)
        return self.user_nodes

    def _identify(self, grid: Grid, timeout: float, *, strict: bool = True) -> bool:
        """Ask the nodes not asked before which user they run; False if there were none.

        ``strict`` (at the start): a node that cannot serve the run stops it. Later the
        node is left out with a warning, and one that did not answer is asked again."""
        new = [n for n in grid.get_node_ids() if n not in self._asked]
        if not new:
            return False
        self._asked.update(new)
        config = ConfigRecord({"settings": self._settings[0]})
        queries = [Message(RecordDict({protocol.CONFIG: config}), dst_node_id=n,
                           message_type=MessageType.QUERY) for n in new]  # fmt: skip
        replies = grid.send_and_receive(queries, timeout=timeout)
        if not strict:
            self._asked -= set(new) - {reply.metadata.src_node_id for reply in replies}
        for reply in replies:
            node = reply.metadata.src_node_id
            refused = reply.content.get(protocol.CONFIG) if not reply.has_error() else None
            problem = None
            if reply.has_error() or (refused is not None and "error" in refused):
                reason = error_reason(reply) if reply.has_error() else str(refused["error"])
                problem = f"node {node} cannot serve this run: {reason}"
            elif (user := int(reply.content[protocol.METRICS]["partition-id"])) >= self.group_size:
                problem = (f"node {node} has node config partition-id={user}, outside this "
                           f"run's users 0..{self.group_size - 1}")  # fmt: skip
            if problem is not None:
                if strict:
                    raise NodeRefused(problem)
                logger.warning("%s; it is left out", problem)
                continue
            if user in self.users:
                previous = self.user_nodes.get(user)
                if previous is not None and previous != node:
                    logger.warning("user %d is back on node %d (was node %d)",
                                   user, node, previous)  # fmt: skip
                self.user_nodes[user] = node
        return True

    def _messages(
        self, rnd: int, downlinks: Sequence[Mapping[int, protocol.Message]], message_type: str
    ) -> list[Message]:
        """One message per user, with an entry for each cell that has something for it.
        A downlink sent to several users (the federated AP's) is encoded once."""
        messages = []
        encoded: dict[int, ArrayRecord] = {}
        for user in sorted({k for downlink in downlinks for k in downlink}):
            content = RecordDict({protocol.LIVE: self._live})
            for index, downlink in enumerate(downlinks):
                if user in downlink:
                    message = downlink[user]
                    if id(message) not in encoded:
                        encoded[id(message)] = ArrayRecord(numpy_ndarrays=message.to_list())
                    encode(message, index, content, arrays=encoded[id(message)], round=rnd,
                           settings=self._settings[index])  # fmt: skip
            messages.append(Message(content, dst_node_id=self.user_nodes[user],
                                    message_type=message_type, group_id=str(rnd)))  # fmt: skip
        return messages

    def _split(
        self, replies: Iterable[Message]
    ) -> list[tuple[dict[int, RecordDict], dict[int, str]]]:
        """Per cell: the replying users' contents, and the reasons of those that failed.

        A whole reply that is an error (the ClientApp raised, the node was lost)
        fails the user in every cell; an entry with an ``error`` fails it in that
        cell only; a missing entry leaves the user silent in that cell.
        """
        node_users = {node: user for user, node in self.user_nodes.items()}
        split: list[tuple[dict[int, RecordDict], dict[int, str]]] = [
            ({}, {}) for _ in self.sessions
        ]
        for reply in replies:
            user = node_users.get(reply.metadata.src_node_id)
            if user is None:
                continue
            for index, (good, errors) in enumerate(split):
                if reply.has_error():
                    errors[user] = error_reason(reply)
                elif (config := reply.content.get(protocol.entry(protocol.CONFIG, index))) is None:
                    continue
                elif "error" in config:
                    errors[user] = str(config["error"])
                else:
                    good[user] = reply.content
        return split

    def _prefixed(self, values: Sequence[Mapping[str, float]]) -> MetricRecord:
        """Finite metrics of every cell, named ``<cell index>.<metric>``."""
        return MetricRecord({
            f"{index}.{key}": value
            for index, row in enumerate(values) for key, value in row.items()
            if math.isfinite(value)
        })  # fmt: skip

    # ---- training --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.connect(grid)
        rnd = server_round + self.offset
        users = sorted(self.user_nodes)
        downlinks = [session.train_downlink(rnd, users) for session in self.sessions]
        return self._messages(rnd, downlinks, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rows = []
        precoders = ArrayRecord()
        for index, (session, (good, errors)) in enumerate(
            zip(self.sessions, self._split(replies), strict=True)
        ):
            answers = {
                k: TrainReply(decode(content, index),
                              dict(content[protocol.entry(protocol.METRICS, index)]))
                for k, content in good.items()
            }  # fmt: skip
            rows.append(session.finish_train_round(server_round + self.offset, answers, errors))
            for name, value in session.ap.precoders().items():
                precoders[f"{index}.{name}"] = Array(value)
        return precoders, self._prefixed(rows)

    # ---- evaluation (after the last round) -------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        rnd = server_round + self.offset
        self._evaluating = rnd >= self.last_round
        if not self._evaluating:
            return []
        users = sorted(self.user_nodes)
        tests = [session.test_downlink(users) for session in self.sessions]
        return self._messages(rnd, tests, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        if not self._evaluating:
            return None
        summaries = []
        for index, (session, (good, errors)) in enumerate(
            zip(self.sessions, self._split(replies), strict=True)
        ):
            metrics = protocol.entry(protocol.METRICS, index)
            evaluations = {k: dict(content[metrics]) for k, content in good.items()}
            summaries.append(session.finish_evaluation(evaluations, errors))
        return self._prefixed(summaries)

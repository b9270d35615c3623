"""The access point as a Flower strategy: a transport for one or more :class:`Session`.

Each session says which messages go to which user each round and what to do
with the replies; this strategy only turns them into Flower messages for the
SuperNodes that run those users, and turns the replies back. Users that fail
or do not answer are recorded by the session and left out of that round's
update; the run goes on with the others.

Several sessions (points of a sweep with the same users and number of rounds)
can run in lockstep, and a simulated node may serve several users: each round,
every node gets one message that carries one entry per (user, point) (records
``arrays.<i>``, ``config.<i>``, and ``metrics.<i>`` in the reply; ``i = point``
for a node serving one user). Flower's fixed cost per message (dispatch,
polling, the context's trip to the worker) is then paid once for all of them.
"""

from __future__ import annotations

import logging
import math
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
from common.run.points import point_key
from common.run.session import Session
from server.nodes import UserNodes
from transport import records

logger = logging.getLogger(__name__)


def deployment_plan(session: Session) -> tuple:
    """What the deployment phases of points run in lockstep must share: the slots left and
    the refresh rounds that open each (:meth:`TrackingSettings.plan`)."""
    return session.settings.tracking.plan()[session.slots_done :]


class AlignmentStrategy(Strategy):
    """Drives one or more :class:`Session` (any access point) in lockstep over a Flower grid.

    Parameters
    ----------
    sessions : sequence of Session
        The points run in lockstep: they must share their users, number of rounds and
        completed rounds.
    nodes : UserNodes, optional
        Which node runs which user, shared by the points of a sweep (new when not given).
    node_wait_timeout : float
        Seconds to wait for every user's node to join at the start.

    Raises
    ------
    ValueError
        No session, or sessions that cannot share rounds.
    """

    def __init__(
        self,
        sessions: Sequence[Session],
        *,
        nodes: UserNodes | None = None,
        node_wait_timeout: float = 300.0,
    ) -> None:
        if not sessions:
            raise ValueError("a strategy needs at least one session")
        shape = {(s.ap.users, s.last_round, s.completed, deployment_plan(s)) for s in sessions}
        if len(shape) > 1:
            raise ValueError(
                "sessions run in lockstep must share their users, number of rounds, "
                f"completed rounds and deployment phase, got {sorted(shape)}"
            )
        # Flower counts this strategy's rounds from 1; a resumed run goes on after its
        # completed rounds
        self.offset = sessions[0].completed
        self.sessions = list(sessions)
        self.node_wait_timeout = node_wait_timeout
        self._evaluating = False
        # every entry names its point, so a node serving a sweep rebuilds its user per point
        self._settings = [session.settings.to_json() for session in self.sessions]
        self.nodes = UserNodes(len(self.users), self._settings[0]) if nodes is None else nodes
        self._live = records.live(point_key(s.settings) for s in self.sessions)
        # node → {(user, point): entry} of the round's messages
        self._sent: dict[int, dict[tuple[int, int], int]] = {}
        self._round = 0  # the training round whose replies are being taken
        self._taken: set[tuple[int, int]] = set()  # its (user, point) replies taken already

    @property
    def users(self) -> tuple[int, ...]:
        return self.sessions[0].ap.users

    @property
    def user_nodes(self) -> dict[int, int]:
        """``user → node id`` of the users known so far."""
        return self.nodes.user_nodes

    @property
    def last_round(self) -> int:
        return self.sessions[0].last_round

    @property
    def rounds_to_run(self) -> int:
        """Flower rounds this strategy drives (fewer than ``last_round`` after a resume)."""
        return self.last_round - self.offset

    def _reachable(self) -> list[int]:
        """This batch's users whose node is known (the nodes of a sweep may serve more
        users: those of its largest point)."""
        return sorted(set(self.user_nodes) & set(self.users))

    def summary(self) -> None:
        logger.info(
            "AlignmentStrategy: %d point(s) (%s), users=%d, rounds=%d",
            len(self.sessions),
            ", ".join(sorted({s.info.method for s in self.sessions})),
            len(self.users),
            self.last_round,
        )

    def connect(self, grid: Grid) -> dict[int, int]:
        """Learn which node runs which user (:meth:`UserNodes.connect`)."""
        return self.nodes.connect(grid, self.users, self.node_wait_timeout)

    def _messages(
        self, rnd: int, downlinks: Sequence[Mapping[int, protocol.Message]], message_type: str
    ) -> list[Message]:
        """One message per node, with an entry for each of its users and each point that has
        something for that user (entry ``slot · points + point``, the user's slot its place
        among the node's users: a node serving one user gets entries ``0..points-1``). A
        downlink sent to several users (the federated AP's) is encoded once."""
        points = len(self.sessions)
        contents: dict[int, RecordDict] = {}
        placed: dict[int, int] = {}  # node → users placed in its message so far
        self._sent = {}
        encoded: dict[int, ArrayRecord] = {}
        for user in sorted({k for downlink in downlinks for k in downlink}):
            node = self.nodes.node(user)
            content = contents.setdefault(node, RecordDict({protocol.LIVE: self._live}))
            sent = self._sent.setdefault(node, {})
            slot = placed[node] = placed.get(node, -1) + 1
            for index, downlink in enumerate(downlinks):
                if user in downlink:
                    message = downlink[user]
                    if id(message) not in encoded:
                        encoded[id(message)] = ArrayRecord(numpy_ndarrays=message.to_list())
                    entry = slot * points + index
                    records.encode(
                        message,
                        entry,
                        content,
                        arrays=encoded[id(message)],
                        round=rnd,
                        settings=self._settings[index],
                        user=user,
                    )
                    sent[(user, index)] = entry
        return [
            Message(content, dst_node_id=node, message_type=message_type, group_id=str(rnd))
            for node, content in contents.items()
        ]

    def _split(
        self, replies: Iterable[Message]
    ) -> list[tuple[dict[int, tuple[RecordDict, int]], dict[int, str]]]:
        """Per point: the replying users' contents and entries, and the reasons of those
        that failed.

        A whole reply that is an error (the ClientApp raised, the node was lost) fails
        every user it was sent for, in the points it was sent for; an entry with an
        ``error`` fails its user in its point only; a missing entry leaves the user silent
        in that point.
        """
        split: list[tuple[dict[int, tuple[RecordDict, int]], dict[int, str]]] = [
            ({}, {}) for _ in self.sessions
        ]
        for reply in replies:
            sent = self._sent.get(reply.metadata.src_node_id, {})
            if reply.has_error():
                reason = records.error_reason(reply)
                for user, index in sent:
                    split[index][1][user] = reason
                continue
            said = set(records.entries(reply.content))
            for (user, index), entry in sent.items():
                if entry not in said:
                    continue
                good, errors = split[index]
                if (reason := records.error(reply.content, entry)) is not None:
                    errors[user] = reason
                else:
                    good[user] = (reply.content, entry)
        return split

    def _prefixed(self, values: Sequence[Mapping[str, float]]) -> MetricRecord:
        """Finite metrics of every point, named ``<point index>.<metric>``."""
        return MetricRecord(
            {
                f"{index}.{key}": value
                for index, row in enumerate(values)
                for key, value in row.items()
                if math.isfinite(value)
            }
        )

    # ---- training --------------------------------------------------------------------------
    def take_replies(self, replies: Iterable[Message]) -> None:
        """Take training replies as they arrive (a :class:`~server.pacing.PacedGrid` that
        pulls them in waves calls this): each user's uplink is absorbed by its point's
        AP at once (:meth:`Session.take_train_reply`; the AP keeps ``F_k``, not the
        ``Nt·u × n`` uplink) and its arrays are dropped from the reply, so a round never
        holds K uplinks. The AP's update sums in user order whatever the arrival order,
        so the numbers are those of taking the replies at the end of the round; failures
        are recorded there (:meth:`aggregate_train`)."""
        training = [r for r in replies if r.metadata.message_type == MessageType.TRAIN]
        for index, (good, _) in enumerate(self._split(training)):
            for user, (content, entry) in good.items():
                if (user, index) not in self._taken:
                    self._take(index, user, content, entry)
                    del content[protocol.entry(protocol.ARRAYS, entry)]

    def _take(self, index: int, user: int, content: RecordDict, entry: int) -> None:
        reply = TrainReply(records.decode(content, entry), records.metrics(content, entry))
        self.sessions[index].take_train_reply(self._round, user, reply)
        self._taken.add((user, index))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.connect(grid)
        rnd = server_round + self.offset
        self._round, self._taken = rnd, set()
        users = self._reachable()
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
            rnd = server_round + self.offset
            for k in sorted(good):  # decoded one at a time: the AP keeps its reduction
                if (k, index) not in self._taken:  # not taken as it arrived
                    self._take(index, k, *good[k])
            rows.append(session.finish_train_round(rnd, {}, errors))
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
        users = self._reachable()
        tests = [session.test_downlink(users) for session in self.sessions]
        return self._messages(rnd, tests, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        if not self._evaluating:
            return None
        summaries = []
        for session, (good, errors) in zip(self.sessions, self._split(replies), strict=True):
            evaluations = {k: records.metrics(*reply) for k, reply in good.items()}
            summaries.append(session.finish_evaluation(evaluations, errors))
        return self._prefixed(summaries)

    # ---- deployment (tracking.*: after the evaluation) --------------------------------------
    def deploy(self, grid: Grid, timeout: float) -> None:
        """The deployment phase of every session, in lockstep: each slot's ``full`` refresh
        rounds as training messages of another kind (:class:`AlignTrack`), then the slot's
        transmissions as evaluation messages (:class:`AlignSlot`). Each message waits at
        most ``timeout`` s; users that fail or stay silent are recorded by their session."""
        first = self.sessions[0]
        for slot in first.slots:
            for _ in first.track_rounds(slot):
                self.connect(grid)
                self._round, self._taken = 0, set()
                users = self._reachable()
                downlinks = [session.track_downlink(slot, users) for session in self.sessions]
                messages = self._messages(slot, downlinks, MessageType.TRAIN)
                replies = list(grid.send_and_receive(messages, timeout=timeout))
                self.take_replies(replies)  # every good reply, those taken as they came too
                for session, (_, errors) in zip(self.sessions, self._split(replies), strict=True):
                    session.finish_track_round(slot, {}, errors)
            self.connect(grid)
            users = self._reachable()
            downlinks = [session.slot_downlink(slot, users) for session in self.sessions]
            messages = self._messages(slot, downlinks, MessageType.EVALUATE)
            replies = list(grid.send_and_receive(messages, timeout=timeout))
            for session, (good, errors) in zip(self.sessions, self._split(replies), strict=True):
                evaluations = {k: records.metrics(*reply) for k, reply in good.items()}
                session.finish_slot(slot, evaluations, errors)

"""Which SuperNode runs which user: node discovery for the AP.

Node ids are opaque, so the AP asks each node that joins which user it runs
(its node config's ``partition-id``). The query names the run, so a device
that cannot serve it (its index, its model, its built assets) says why at
once. At the start the AP waits until every user's node has joined, and a node
that cannot serve the run stops it, as do two nodes that say the same
``partition-id``; later, nodes that join (a SuperNode that came back after a
failure, under a new node id) are asked too and take their user over at the
next round, one that cannot serve is left out with a warning, and one whose
user another online node serves is left out (and asked again each round) until
that node has gone. One :class:`UserNodes` serves every point of a sweep (the same
nodes).
"""

from __future__ import annotations

import logging
import time

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from transport import records

logger = logging.getLogger(__name__)

# How long a round waits for the nodes that joined since the last one to say who they are.
QUERY_TIMEOUT_S = 30.0


def _listed(users: list[int], shown: int = 10) -> str:
    """``[0, 1, 2]``, or the first ``shown`` and how many in all."""
    if len(users) <= shown:
        return str(users)
    return f"{str(users[:shown])[:-1]}, … ({len(users)} in all)]"


class UsersNotConnected(RuntimeError):
    """Fewer users than configured joined the federation in time."""


class NodeRefused(RuntimeError):
    """A node cannot serve the run (its node config, model or assets); names the reason."""


class UserNodes:
    """The node of every user (``user → node id``), learned by asking each new node once
    (a simulated node may serve several users).

    Parameters
    ----------
    group_size : int
        How many users the nodes serve (a sweep's: its largest point's): a node that says
        it serves a user from here on is a misconfigured device.
    settings : str
        The settings (JSON) every query names: those of the sweep's point with the most
        users, so that each node checks it can serve its user.
    """

    def __init__(self, group_size: int, settings: str) -> None:
        self.group_size = group_size
        self.settings = settings
        self.user_nodes: dict[int, int] = {}
        self._asked: set[int] = set()

    def node(self, user: int) -> int:
        return self.user_nodes[user]

    def connect(self, grid: Grid, users: tuple[int, ...], wait: float) -> dict[int, int]:
        """The nodes of ``users`` (and of any other user a node says it runs).

        At the start, wait up to ``wait`` seconds until every user's node has joined;
        under way, only ask the nodes that joined since. Every node is asked once, and
        its user kept for every point of a sweep, whichever users this one has.

        Raises
        ------
        UsersNotConnected
            Some user's node did not join within ``wait`` seconds.
        NodeRefused
            At the start, a node cannot serve the run (the reason it gave).
        """
        wanted = set(users)
        if wanted <= set(self.user_nodes):  # under way: a node that fails now fails alone
            self._identify(grid, QUERY_TIMEOUT_S, strict=False)
            return self.user_nodes
        deadline = time.monotonic() + wait
        while not wanted <= set(self.user_nodes):
            if self._identify(grid, wait, strict=True):
                continue
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(self.user_nodes))
                raise UsersNotConnected(
                    f"users {_listed(missing)} did not connect within {wait:.3g} s "
                    "(experiment.node_timeout + experiment.node_timeout_per_user per user): "
                    "in a simulation, give them longer; in a deployment, start one SuperNode "
                    f"per user with node config partition-id=0..{len(wanted) - 1}"
                )
            time.sleep(0.1)
        return self.user_nodes

    def _identify(self, grid: Grid, timeout: float, *, strict: bool) -> bool:
        """Ask the nodes not asked before which user they run; False if there were none.

        ``strict`` (at the start): a node that cannot serve the run stops it. Later the
        node is left out with a warning, and one that did not answer is asked again."""
        online = list(grid.get_node_ids())
        new = [n for n in online if n not in self._asked]
        if not new:
            return False
        self._asked.update(new)
        queries = [
            Message(records.query(self.settings), dst_node_id=n, message_type=MessageType.QUERY)
            for n in new
        ]
        replies = grid.send_and_receive(queries, timeout=timeout)
        if not strict:
            self._asked -= set(new) - {reply.metadata.src_node_id for reply in replies}
        for reply in replies:
            node = reply.metadata.src_node_id
            users, reason = records.read_identity(reply)
            problem = None
            outside = [k for k in users or [] if not 0 <= k < self.group_size]
            if reason is not None:
                problem = f"node {node} cannot serve this run: {reason}"
            elif outside:
                problem = (
                    f"node {node} has node config partition-id={outside[0]}, outside this "
                    f"run's users 0..{self.group_size - 1}"
                )
            elif not users:  # a simulated SuperNode beyond the run's users: nothing to do
                logger.debug("node %d serves none of this run's users", node)
                continue
            if problem is not None:
                if strict:
                    raise NodeRefused(problem)
                logger.warning("%s; it is left out", problem)
                continue
            for user in users:
                self._claim(node, user, online, strict=strict)
        return True

    def _claim(self, node: int, user: int, online: list[int], *, strict: bool) -> None:
        """``node`` says it serves ``user``: it does, unless another online node does."""
        previous = self.user_nodes.get(user)
        if previous is not None and previous != node:
            if strict:
                raise NodeRefused(
                    f"nodes {previous} and {node} both have node config "
                    f"partition-id={user}: start each user's SuperNode once"
                )
            if previous in online:  # the holder still answers: it keeps its user
                logger.warning(
                    "node %d has partition-id=%d, which node %d serves: it is left out "
                    "while node %d is online",
                    node,
                    user,
                    previous,
                    previous,
                )
                self._asked.discard(node)  # asked again: it takes over once alone
                return
            logger.warning("user %d is back on node %d (was node %d)", user, node, previous)
        self.user_nodes[user] = node

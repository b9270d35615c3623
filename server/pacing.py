"""How long the AP waits for a round: a bound that follows the run's own pace.

Flower's ``Strategy.start`` gives every round the same timeout. A fixed bound
large enough for a paper-scale first round (every user prepares its inputs in
it) would take ten minutes to notice a stuck round of a run whose rounds take
a second. :class:`PacedGrid` wraps the grid a strategy drives and gives each
training (evaluation) round at most ``factor`` times the slowest complete
training (evaluation) round so far, never less than ``floor``, never more than
the configured ``round_timeout``; until one has completed, the configured
timeout holds.
A round in which some user did not answer does not set the pace: its length
is the bound itself, not the work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, MessageType

MIN_ROUND_TIMEOUT_S = 60.0  # the shortest bound the pace may give a round
ROUND_TYPES = (MessageType.TRAIN, MessageType.EVALUATE)


class PacedGrid:
    """A grid whose training and evaluation rounds wait at most :attr:`bound` seconds."""

    def __init__(self, grid: Any, cap: float, factor: float, floor: float = MIN_ROUND_TIMEOUT_S):
        self._grid = grid
        self.cap, self.factor, self.floor = cap, factor, min(floor, cap)
        # seconds of the slowest complete round so far, per kind of round (training and
        # evaluation are different work: the first of each waits the configured cap)
        self.slowest: dict[str, float] = {}

    def bound(self, kind: str = MessageType.TRAIN) -> float:
        """The wait the next ``kind`` round gets (``factor`` 0: always ``cap``)."""
        if kind not in self.slowest or self.factor <= 0:
            return self.cap
        return min(self.cap, max(self.floor, self.factor * self.slowest[kind]))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        kinds = {m.metadata.message_type for m in messages}
        if len(kinds) != 1 or (kind := kinds.pop()) not in ROUND_TYPES:
            return self._grid.send_and_receive(messages, timeout=timeout)  # e.g. node queries
        bound = self.bound(kind)
        limit = bound if timeout is None else min(timeout, bound)
        start = time.monotonic()
        replies = list(self._grid.send_and_receive(messages, timeout=limit))
        if len(replies) == len(messages):
            elapsed = time.monotonic() - start
            self.slowest[kind] = max(self.slowest.get(kind, 0.0), elapsed)
        return replies

    def __getattr__(self, name: str) -> Any:  # everything else is the wrapped grid's
        return getattr(self._grid, name)

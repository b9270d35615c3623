"""How long the AP waits for a round: a bound that follows the run's own pace.

Flower's ``Strategy.start`` gives every round the same timeout. A fixed bound
large enough for a paper-scale first round (every user prepares its inputs in
it) would take ten minutes to notice a stuck round of a run whose rounds take
a second. :class:`PacedGrid` wraps the grid a strategy drives and gives each
training or evaluation round at most ``factor`` times the slowest complete
round so far (never less than ``floor``, never more than the configured
``round_timeout``); until a round has completed, the configured timeout holds.
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
        self.slowest: float | None = None  # seconds of the slowest complete round so far

    @property
    def bound(self) -> float:
        """The wait the next round gets (``factor`` 0: always the configured ``cap``)."""
        if self.slowest is None or self.factor <= 0:
            return self.cap
        return min(self.cap, max(self.floor, self.factor * self.slowest))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if not any(m.metadata.message_type in ROUND_TYPES for m in messages):
            return self._grid.send_and_receive(messages, timeout=timeout)  # e.g. node queries
        limit = self.bound if timeout is None else min(timeout, self.bound)
        start = time.monotonic()
        replies = list(self._grid.send_and_receive(messages, timeout=limit))
        if len(replies) == len(messages):
            self.slowest = max(self.slowest or 0.0, time.monotonic() - start)
        return replies

    def __getattr__(self, name: str) -> Any:  # everything else is the wrapped grid's
        return getattr(self._grid, name)

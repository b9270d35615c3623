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
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Message, MessageType

MIN_ROUND_TIMEOUT_S = 60.0  # the shortest bound the pace may give a round
ROUND_TYPES = (MessageType.TRAIN, MessageType.EVALUATE)


def simulated(grid: Any) -> bool:
    """Whether ``grid`` is a simulation's in-memory grid: the one grid with a settable
    ``pull_interval`` (a :class:`PacedGrid` answers for the grid it wraps)."""
    return hasattr(grid, "pull_interval")


class PacedGrid:
    """A grid whose training and evaluation rounds wait at most :attr:`bound` seconds.

    With a ``window``, a round keeps at most that many messages in the link state at
    once: each reply lets the next message go (:meth:`windowed`). Flower's in-memory
    link state looks through every stored message for every node on each of its
    dispatch passes, so a round of K messages sent at once costs it on the order of
    K² checks per pass; a window bounds that to K times the window.

    Parameters
    ----------
    grid : Grid
        The grid to wrap (its ``push_messages``/``pull_messages`` serve the window).
    cap : float
        The configured round timeout (s).
    factor : float
        The multiple of the slowest complete round a later round may wait (0: ``cap``).
    floor : float, optional
        The shortest bound (s), at most ``cap``.
    window : int, callable or None, optional
        The most messages of a round in the link state at once (None: all); a callable
        returning it is asked once, when the first round that needs it is sent.
    on_replies : callable, optional
        Called with each wave of replies as a windowed round pulls them (the strategy
        takes their uplinks at once, :meth:`AlignmentStrategy.take_replies`).
    """

    def __init__(
        self,
        grid: Any,
        cap: float,
        factor: float,
        floor: float = MIN_ROUND_TIMEOUT_S,
        window: int | Callable[[], int] | None = None,
        on_replies: Callable[[list[Message]], None] | None = None,
    ):
        self._grid = grid
        self.on_replies = on_replies
        self.cap, self.factor, self.floor = cap, factor, min(floor, cap)
        # seconds of the slowest complete round so far, per kind of round (training and
        # evaluation are different work: the first of each waits the configured cap)
        self.slowest: dict[str, float] = {}
        self._window = window
        if not callable(window):
            self._check(window)

    @staticmethod
    def _check(window: int | None) -> int | None:
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1 message, got {window}")
        return window

    @property
    def window(self) -> int | None:
        """The most messages of a round in the link state at once (None: all)."""
        if callable(self._window):
            self._window = self._check(self._window())
        return self._window

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
            # e.g. node queries, all at once: in waves they took longer (512 nodes: 10 s)
            return self._grid.send_and_receive(messages, timeout=timeout)
        bound = self.bound(kind)
        limit = bound if timeout is None else min(timeout, bound)
        start = time.monotonic()
        replies = self._send(messages, limit)
        if len(replies) == len(messages):
            elapsed = time.monotonic() - start
            self.slowest[kind] = max(self.slowest.get(kind, 0.0), elapsed)
        return replies

    def _send(self, messages: list[Message], timeout: float) -> list[Message]:
        if self.window is not None and len(messages) > self.window:
            return self.windowed(messages, timeout)
        return list(self._grid.send_and_receive(messages, timeout=timeout))

    def windowed(self, messages: list[Message], timeout: float) -> list[Message]:
        """Send ``messages`` with at most :attr:`window` unanswered at once; the replies.

        Like Flower's ``send_and_receive``: replies are pulled every ``pull_interval``
        seconds until every message is answered or ``timeout`` seconds have passed;
        messages not yet sent by then get no reply (their users are silent).

        Parameters
        ----------
        messages : list of Message
            The round's messages, sent in this order.
        timeout : float
            The most seconds the round may take.

        Returns
        -------
        list of Message
            The replies received, in the order they came.
        """
        end = time.monotonic() + timeout
        waiting = list(reversed(messages))
        outstanding: set[str] = set()
        replies: list[Message] = []
        while True:
            free = min(self.window - len(outstanding), len(waiting))
            if free > 0:
                outstanding |= set(self._grid.push_messages([waiting.pop() for _ in range(free)]))
            got = list(self._grid.pull_messages(outstanding)) if outstanding else []
            if got and self.on_replies is not None:
                self.on_replies(got)
            replies += got
            outstanding -= {m.metadata.reply_to_message_id for m in got}
            if (not outstanding and not waiting) or time.monotonic() >= end:
                return replies
            if not got:
                time.sleep(getattr(self._grid, "pull_interval", 0.1))

    def __getattr__(self, name: str) -> Any:  # everything else is the wrapped grid's
        return getattr(self._grid, name)

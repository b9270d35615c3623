"""Communication overhead: messages and payload bytes per direction, round and user."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from common.parties.protocol import Message

DOWN, UP = "down", "up"


class Ledger:
    """Counts every message that crosses the air, as sent, in either runtime.

    One record per message and user: ``(phase, round, user, direction, bytes)``, the
    bytes being :attr:`~common.parties.protocol.Message.nbytes` (a message sent to
    several users is counted once per user).
    """

    def __init__(self) -> None:
        self._rows: list[tuple[str, int, int, str, int]] = []

    def record(self, phase: str, rnd: int, direction: str, messages: Mapping[int, Message]) -> None:
        """Count one batch of messages.

        Parameters
        ----------
        phase : str
            ``"train"`` or ``"evaluate"`` (the session's phases).
        rnd : int
            The round (0 for the evaluation).
        direction : str
            :data:`DOWN` or :data:`UP`.
        messages : Mapping of int to Message
            Each user's message, by user index.
        """
        for user, message in messages.items():
            self._rows.append((phase, rnd, int(user), direction, message.nbytes))

    def rows(self) -> list[tuple[str, int, int, str, int]]:
        """Every record as ``(phase, round, user, direction, bytes)`` (for checkpoints).

        Returns
        -------
        list of tuple of (str, int, int, str, int)
            A copy of the records, in recording order.
        """
        return list(self._rows)

    @classmethod
    def from_rows(cls, rows) -> Ledger:
        """A ledger holding ``rows`` (what :meth:`rows` returned; for resuming).

        Parameters
        ----------
        rows : iterable of 5-sequences
            ``(phase, round, user, direction, bytes)``, converted to
            ``(str, int, int, str, int)``.

        Returns
        -------
        Ledger

        Raises
        ------
        ValueError
            A row does not have five entries, or a number is a string that is not one.
        TypeError
            A number is of a type ``int()`` refuses (e.g. ``None``).
        """
        ledger = cls()
        ledger._rows = [(str(p), int(r), int(k), str(d), int(b)) for p, r, k, d, b in rows]
        return ledger

    def round_totals(self, phase: str, rnd: int) -> dict[str, int]:
        """Messages and bytes in each direction during one round.

        Parameters
        ----------
        phase : str
            ``"train"`` or ``"evaluate"``.
        rnd : int
            The round.

        Returns
        -------
        dict of str to int
            ``messages_down``, ``bytes_down``, ``messages_up``, ``bytes_up`` (bytes).

        Raises
        ------
        KeyError
            A matching record's direction is neither :data:`DOWN` nor :data:`UP`.
        """
        out = {"messages_down": 0, "bytes_down": 0, "messages_up": 0, "bytes_up": 0}
        for ph, r, _, direction, nbytes in self._rows:
            if ph == phase and r == rnd:
                out[f"messages_{direction}"] += 1
                out[f"bytes_{direction}"] += nbytes
        return out

    def user_totals(self) -> dict[int, dict[str, int]]:
        """Per user, over the whole run: bytes down, bytes up, messages both ways.

        Returns
        -------
        dict of int to dict of str to int
            For each user with at least one record: ``bytes_down``, ``bytes_up`` (bytes)
            and ``messages``.
        """
        out: dict[int, dict[str, int]] = defaultdict(
            lambda: {"bytes_down": 0, "bytes_up": 0, "messages": 0}
        )
        for _, _, user, direction, nbytes in self._rows:
            out[user][f"bytes_{direction}"] += nbytes
            out[user]["messages"] += 1
        return dict(out)

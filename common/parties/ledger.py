"""Communication overhead: messages and payload bytes per direction, round and user."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from common.parties.protocol import Message

DOWN, UP = "down", "up"


class Ledger:
    """Counts every message that crosses the air, as sent, in either runtime."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, int, int, str, int]] = []

    def record(self, phase: str, rnd: int, direction: str, messages: Mapping[int, Message]) -> None:
        for user, message in messages.items():
            self._rows.append((phase, rnd, int(user), direction, message.nbytes))

    def rows(self) -> list[tuple[str, int, int, str, int]]:
        """Every record as ``(phase, round, user, direction, bytes)`` (for checkpoints)."""
        return list(self._rows)

    @classmethod
    def from_rows(cls, rows) -> Ledger:
        ledger = cls()
        ledger._rows = [(str(p), int(r), int(k), str(d), int(b)) for p, r, k, d, b in rows]
        return ledger

    def round_totals(self, phase: str, rnd: int) -> dict[str, int]:
        """Messages and bytes in each direction during one round."""
        out = {"messages_down": 0, "bytes_down": 0, "messages_up": 0, "bytes_up": 0}
        for ph, r, _, direction, nbytes in self._rows:
            if ph == phase and r == rnd:
                out[f"messages_{direction}"] += 1
                out[f"bytes_{direction}"] += nbytes
        return out

    def user_totals(self) -> dict[int, dict[str, int]]:
        """Per user, over the whole run: bytes down, bytes up, messages both ways."""
        out: dict[int, dict[str, int]] = defaultdict(
            lambda: {"bytes_down": 0, "bytes_up": 0, "messages": 0}
        )
        for _, _, user, direction, nbytes in self._rows:
            out[user][f"bytes_{direction}"] += nbytes
            out[user]["messages"] += 1
        return dict(out)

"""Communication overhead: messages and payload bytes per direction, round and user, and
the downlink streams that carry them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping

from common.parties.protocol import Message

DOWN, UP = "down", "up"
# the phases of training and its evaluation (a deployment phase's are counted apart)
RUN_PHASES = ("train", "evaluate")


class Ledger:
    """Counts every message that crosses the air, as sent, in either runtime.

    One record per message and user: ``(phase, round, user, direction, bytes, stream)``,
    the bytes being :attr:`~common.parties.protocol.Message.nbytes` (a message sent to
    several users is counted once per user). On the downlink, one message object sent to
    several users in one batch is one *stream* (the federated AP's one broadcast, the
    clustered AP's one per group): ``stream`` numbers the batch's distinct messages, and
    the stream totals count each once. An uplink is its user's own (``stream`` -1).
    """

    def __init__(self) -> None:
        self._rows: list[tuple[str, int, int, str, int, int]] = []

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
            Each user's message, by user index (on the downlink, users given the same
            message object share one stream).
        """
        streams: dict[int, int] = {}
        for user, message in messages.items():
            stream = streams.setdefault(id(message), len(streams)) if direction == DOWN else -1
            self._rows.append((phase, rnd, int(user), direction, message.nbytes, stream))

    def rows(self) -> list[tuple[str, int, int, str, int, int]]:
        """Every record as ``(phase, round, user, direction, bytes, stream)`` (for
        checkpoints).

        Returns
        -------
        list of tuple of (str, int, int, str, int, int)
            A copy of the records, in recording order.
        """
        return list(self._rows)

    @classmethod
    def from_rows(cls, rows, groups: Mapping[int, int] | None = None) -> Ledger:
        """A ledger holding ``rows`` (what :meth:`rows` returned; for resuming).

        Parameters
        ----------
        rows : iterable of 6-sequences
            ``(phase, round, user, direction, bytes, stream)``, converted to
            ``(str, int, int, str, int, int)``.
        groups : Mapping of int to int, optional
            For a 5-sequence (written before streams were counted, so before groups
            changed): each user's group, whose stream it was; without it, or for a user
            it lacks, each user's own stream.

        Returns
        -------
        Ledger

        Raises
        ------
        ValueError
            A row does not have five or six entries, or a number is a string that is not
            one.
        TypeError
            A number is of a type ``int()`` refuses (e.g. ``None``).
        """
        ledger = cls()
        for row in rows:
            if len(row) not in (5, 6):
                raise ValueError(f"a ledger row has 5 or 6 entries, got {len(row)}: {row!r}")
            p, r, k, d, b, *stream = row
            group = (groups or {}).get(int(k))
            own = -2 - int(k) if group is None else group  # before streams were counted
            own = -1 if str(d) == UP else own
            ledger._rows.append(
                (str(p), int(r), int(k), str(d), int(b), int(stream[0]) if stream else own)
            )
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
            ``messages_down``, ``bytes_down``, ``messages_up``, ``bytes_up`` (bytes, per
            user), ``streams_down`` and ``stream_bytes_down`` (each downlink stream once).

        Raises
        ------
        KeyError
            A matching record's direction is neither :data:`DOWN` nor :data:`UP`.
        """
        out = {"messages_down": 0, "bytes_down": 0, "messages_up": 0, "bytes_up": 0}
        streams: dict[int, int] = {}
        for ph, r, _, direction, nbytes, stream in self._rows:
            if ph == phase and r == rnd:
                out[f"messages_{direction}"] += 1
                out[f"bytes_{direction}"] += nbytes
                if direction == DOWN:
                    streams[stream] = nbytes
        out["streams_down"] = len(streams)
        out["stream_bytes_down"] = sum(streams.values())
        return out

    def stream_totals(self, phases: Collection[str] | None = None) -> dict[str, int]:
        """The downlink's streams over the whole run, each counted once per round.

        Parameters
        ----------
        phases : collection of str, optional
            Count only these phases (default: all).

        Returns
        -------
        dict of str to int
            ``streams_down`` (the train rounds' streams, summed over rounds) and
            ``stream_bytes_down`` (bytes of every phase's streams).
        """
        seen: dict[tuple[str, int, int], int] = {}
        for phase, rnd, _, direction, nbytes, stream in self._rows:
            if direction == DOWN and (phases is None or phase in phases):
                seen[(phase, rnd, stream)] = nbytes
        return {
            "streams_down": sum(1 for phase, _, _ in seen if phase == "train"),
            "stream_bytes_down": sum(seen.values()),
        }

    def user_totals(self, phases: Collection[str] | None = None) -> dict[int, dict[str, int]]:
        """Per user, over the whole run: bytes down, bytes up, messages both ways.

        Parameters
        ----------
        phases : collection of str, optional
            Count only these phases (default: all).

        Returns
        -------
        dict of int to dict of str to int
            For each user with at least one record: ``bytes_down``, ``bytes_up`` (bytes)
            and ``messages``.
        """
        out: dict[int, dict[str, int]] = defaultdict(
            lambda: {"bytes_down": 0, "bytes_up": 0, "messages": 0}
        )
        for phase, _, user, direction, nbytes, _ in self._rows:
            if phases is not None and phase not in phases:
                continue
            out[user][f"bytes_{direction}"] += nbytes
            out[user]["messages"] += 1
        return dict(out)

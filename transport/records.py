"""Protocol messages as Flower records: the one place both apps read and write them.

A Flower message between the AP and a user carries one *entry* per sweep
point in flight (one entry, index 0, for a single run). Entry ``i`` is three
records of the message's :class:`~flwr.app.RecordDict`:

- ``arrays.<i>``: an :class:`~flwr.app.ArrayRecord` with the protocol
  message's arrays in declared order (complex arrays travel only here);
- ``config.<i>``: a :class:`~flwr.app.ConfigRecord` with the message's kind,
  the round and the point's settings (JSON); in a reply, the uplink's kind, or
  ``error`` when the entry failed;
- ``metrics.<i>``: in a reply, the user's scalar metrics, with Flower's
  ``num-examples`` (the pilots a user trained on, the test samples it
  evaluated).

A message also names every point still in flight (record ``live``, key
``points``), so that a node keeps what it learned for points whose entry it
does not get in a round (partial participation). Names of records come from
:mod:`common.parties.protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from common.parties import protocol

NUM_EXAMPLES = "num-examples"  # Flower's name for the samples behind a reply
LIVE_KEY = "points"  # in the ``live`` record: the keys of the points in flight
_OLD_LIVE_KEY = "cells"  # what messages of earlier versions call them


def encode(
    message: protocol.Message,
    index: int = 0,
    into: RecordDict | None = None,
    *,
    arrays: ArrayRecord | None = None,
    **config: int | str,
) -> RecordDict:
    """Add ``message`` as entry ``index`` of ``into`` (a new RecordDict by default).

    Parameters
    ----------
    message : protocol.Message
        The protocol message (its arrays in declared order become ``arrays.<index>``).
    index : int
        The entry (the sweep point's position among those in flight).
    into : RecordDict, optional
        The content to add to; a new one when not given.
    arrays : ArrayRecord, optional
        The message's arrays already encoded (a downlink sent to many users is encoded
        once).
    **config
        More values of the entry's config record (``round``, ``settings``).

    Returns
    -------
    RecordDict
        ``into``, with the entry.
    """
    content = RecordDict() if into is None else into
    if arrays is None:
        arrays = ArrayRecord(numpy_ndarrays=message.to_list())
    content[protocol.entry(protocol.ARRAYS, index)] = arrays
    content[protocol.entry(protocol.CONFIG, index)] = ConfigRecord({"kind": message.KIND, **config})
    return content


def decode(content: RecordDict, index: int = 0) -> protocol.Message:
    """The protocol message in entry ``index``.

    Raises
    ------
    ValueError
        The kind is unknown, or the arrays do not match it.
    """
    kind = str(content[protocol.entry(protocol.CONFIG, index)]["kind"])
    return protocol.message_class(kind).from_list(arrays(content, index))


def arrays(content: RecordDict, index: int = 0) -> list[np.ndarray]:
    """The arrays of entry ``index``, in declared order."""
    return content[protocol.entry(protocol.ARRAYS, index)].to_numpy_ndarrays()


def config(content: RecordDict, index: int = 0) -> dict:
    """The config of entry ``index`` (kind, round, settings; ``error`` in a failed reply)."""
    return dict(content[protocol.entry(protocol.CONFIG, index)])


def metrics(content: RecordDict, index: int = 0) -> dict[str, float]:
    """The user's metrics in entry ``index`` of a reply."""
    return dict(content[protocol.entry(protocol.METRICS, index)])


def entries(content: RecordDict) -> list[int]:
    """The entries a message carries, by index."""
    return protocol.entry_indices(content.keys())


def has_entry(content: RecordDict, index: int) -> bool:
    return protocol.entry(protocol.CONFIG, index) in content


def error(content: RecordDict, index: int) -> str | None:
    """Why entry ``index`` of a reply failed, or None."""
    entry = content.get(protocol.entry(protocol.CONFIG, index))
    return None if entry is None or "error" not in entry else str(entry["error"])


def add_reply(
    reply: RecordDict,
    index: int,
    uplink: list[np.ndarray] | None,
    kind: str | None,
    values: Mapping[str, float],
    num_examples: int,
) -> None:
    """Entry ``index`` of a user's reply: its uplink's arrays and kind (none after an
    evaluation), its metrics and the samples behind them."""
    reply[protocol.entry(protocol.CONFIG, index)] = ConfigRecord(
        {} if uplink is None else {"kind": str(kind)}
    )
    reply[protocol.entry(protocol.METRICS, index)] = MetricRecord(
        {**values, NUM_EXAMPLES: int(num_examples)}
    )
    if uplink is not None:
        reply[protocol.entry(protocol.ARRAYS, index)] = ArrayRecord(numpy_ndarrays=uplink)


def add_error(reply: RecordDict, index: int, reason: str) -> None:
    """Entry ``index`` of a reply failed (the other entries of the message go on)."""
    reply[protocol.entry(protocol.CONFIG, index)] = ConfigRecord({"error": reason})


def live(keys: Iterable[str]) -> ConfigRecord:
    """The record naming the points in flight (added to every message as ``live``)."""
    return ConfigRecord({LIVE_KEY: list(keys)})


def live_points(content: RecordDict) -> set[str]:
    """The keys of the points a message says are in flight (empty when it says none)."""
    record = content.get(protocol.LIVE)
    if record is None:
        return set()
    return set(record.get(LIVE_KEY, record.get(_OLD_LIVE_KEY, [])))


def state_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """What a user learned, as a record for the node's ``context.state``."""
    return ArrayRecord({name: Array(value) for name, value in state.items()})


def state_arrays(record: ArrayRecord | None) -> dict[str, np.ndarray]:
    """What a user learned, back from the node's ``context.state`` (empty when none)."""
    return {} if record is None else {name: a.numpy() for name, a in record.items()}


# ---- the query that names the run and asks a node which user it runs ---------------------
PARTITION_ID = "partition-id"


def query(settings: str) -> RecordDict:
    """A node query naming the run (its settings as JSON), so a device can refuse it."""
    return RecordDict({protocol.CONFIG: ConfigRecord({"settings": settings})})


def query_settings(content: RecordDict) -> str | None:
    """The settings a node query names (None: it names none)."""
    config = content.get(protocol.CONFIG)
    return None if config is None or "settings" not in config else str(config["settings"])


USERS = "users"  # in a node's identity: every user it serves


def identity(users: Iterable[int]) -> RecordDict:
    """A node's answer to a query: the users it serves (a deployed device one, its
    ``partition-id``; a simulated node one or more)."""
    users = [int(k) for k in users]
    return RecordDict(
        {protocol.METRICS: MetricRecord({PARTITION_ID: users[0] if users else -1, USERS: users})}
    )


def refusal(reason: str) -> RecordDict:
    """A node's answer to a query when it cannot serve the run."""
    return RecordDict({protocol.CONFIG: ConfigRecord({"error": reason})})


def read_identity(reply: Message) -> tuple[list[int] | None, str | None]:
    """The users a node serves, or why it cannot serve the run (one of the two is None).
    A node of an earlier version names one user, its ``partition-id``."""
    if reply.has_error():
        return None, error_reason(reply)
    refused = reply.content.get(protocol.CONFIG)
    if refused is not None and "error" in refused:
        return None, str(refused["error"])
    said = reply.content[protocol.METRICS]
    if USERS in said:
        return [int(k) for k in said[USERS]], None
    return [int(said[PARTITION_ID])], None


def error_reason(reply: Message) -> str:
    """The user's own exception text out of Flower's error reason."""
    return reply.error.reason.rsplit("Message: ", 1)[-1].strip()

"""Everything that crosses the air, declared once for both sides.

Each message is a frozen dataclass of named numpy arrays with fixed dtypes. The
in-process driver passes them as objects; over Flower a message travels as its
arrays in declared order (``to_list``/``from_list``) in the record called
:data:`ARRAYS`, its kind in :data:`CONFIG` and the sender's scalar metrics in
:data:`METRICS`. Byte counts for the overhead figures are the payload sizes
computed here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import numpy as np

# The parts of a message on any transport (record names in a Flower RecordDict).
ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"


def entry(part: str, index: int) -> str:
    """The record name of ``part`` for the ``index``-th point of a message carrying several
    points run in lockstep (one entry, index 0, for a single run).

    Parameters
    ----------
    part : str
        :data:`ARRAYS`, :data:`CONFIG` or :data:`METRICS`.
    index : int
        The point's position in the message.

    Returns
    -------
    str
        ``"<part>.<index>"``.
    """
    return f"{part}.{index}"


# A message carrying points also names every point still in flight (config record
# ``LIVE``, key ``points``: their point keys), so that a node keeps what it learned
# for points whose entry it does not get this round (partial participation).
LIVE = "live"


def entry_indices(names: Iterable[str]) -> list[int]:
    """The points a message carries, by index, from its record names.

    Parameters
    ----------
    names : iterable of str
        The record names of a message (those made by :func:`entry`, and others).

    Returns
    -------
    list of int
        The indices of the ``config.<index>`` records, sorted.

    Raises
    ------
    ValueError
        A name starting with ``config.`` does not end in an integer.
    """
    prefix = CONFIG + "."
    return sorted(int(name[len(prefix) :]) for name in names if name.startswith(prefix))


COMPLEX = np.dtype(np.complex128)
INDEX = np.dtype(np.uint16)  # Top-K feature indices (latent dims < 65,536)
INT = np.dtype(np.int64)
REAL = np.dtype(np.float64)


@dataclasses.dataclass(frozen=True)
class Message:
    """Base class: a named bundle of arrays of declared dtypes.

    A subclass is a frozen dataclass that sets :attr:`KIND` (its unique name on the
    wire) and :attr:`DTYPES` (one dtype per field) and declares one ``np.ndarray``
    field per array; field order is wire order. It is decoded by kind only once it is
    listed in :data:`MESSAGES`.

    Attributes
    ----------
    KIND : str
        The message kind (class attribute).
    DTYPES : dict of str to numpy.dtype
        The dtype each field must have (class attribute).

    Raises
    ------
    TypeError
        On construction, a field's dtype differs from its declared one (no conversion
        is made).
    """

    KIND: ClassVar[str] = ""
    DTYPES: ClassVar[dict[str, np.dtype]] = {}

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = np.asarray(getattr(self, field.name))
            expected = self.DTYPES[field.name]
            if value.dtype != expected:
                raise TypeError(
                    f"{self.KIND}.{field.name} must have dtype {expected}, got {value.dtype}"
                )

    def arrays(self) -> dict[str, np.ndarray]:
        """The message's arrays by field name, in declared order.

        Returns
        -------
        dict of str to ndarray
            The fields themselves (not copies).
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def nbytes(self) -> int:
        """Payload bytes: what the message actually carries.

        Returns
        -------
        int
            The sum of the arrays' ``nbytes`` (bytes; no framing or metadata).
        """
        return int(sum(a.nbytes for a in self.arrays().values()))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The array names in declared (wire) order.

        Returns
        -------
        tuple of str
            The dataclass fields' names.
        """
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_list(self) -> list[np.ndarray]:
        """Arrays in declared order (the ``parameters`` list of a NumPyClient).

        Returns
        -------
        list of ndarray
            One array per field, in :meth:`field_names` order.
        """
        return [getattr(self, name) for name in self.field_names()]

    @classmethod
    def from_list(cls, arrays: list[np.ndarray]) -> Message:
        """Rebuild a message from its arrays in declared order (inverse of :meth:`to_list`).

        Parameters
        ----------
        arrays : list of ndarray
            One array per field, in :meth:`field_names` order.

        Returns
        -------
        Message
            An instance of ``cls``.

        Raises
        ------
        ValueError
            The number of arrays differs from the number of fields.
        TypeError
            An array does not have its field's declared dtype.
        """
        names = cls.field_names()
        if len(arrays) != len(names):
            raise ValueError(f"message {cls.KIND!r} needs {len(names)} arrays, got {len(arrays)}")
        return cls.from_arrays(dict(zip(names, arrays, strict=True)))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Message:
        """Rebuild a message from its arrays by name (inverse of :meth:`arrays`).

        Parameters
        ----------
        arrays : dict of str to array_like
            Exactly one entry per field.

        Returns
        -------
        Message
            An instance of ``cls``.

        Raises
        ------
        ValueError
            The names differ from the fields (missing or extra).
        TypeError
            An array does not have its field's declared dtype.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if set(arrays) != names:
            raise ValueError(
                f"message {cls.KIND!r} needs arrays {sorted(names)}, got {sorted(arrays)}"
            )
        return cls(**{name: np.asarray(arrays[name]) for name in names})


@dataclasses.dataclass(frozen=True)
class AlignPilots(Message):
    """Downlink training signal ``F X̄`` (Nt·u × n): the precoded whitened pilots.

    Attributes
    ----------
    signal : ndarray, shape (Nt·u, n), complex128
        ``F X̄``, one column per pilot.
    """

    KIND: ClassVar[str] = "align_pilots"
    DTYPES: ClassVar[dict[str, np.dtype]] = {"signal": COMPLEX}
    signal: np.ndarray


@dataclasses.dataclass(frozen=True)
class AlignUplink(Message):
    """Uplink ``Aᴴ A`` (Nt·u × Nt·u) and ``Aᴴ Ȳ`` (Nt·u × n): nothing else leaves a user.

    Attributes
    ----------
    a_gram : ndarray, shape (Nt·u, Nt·u), complex128
        ``Aᴴ A`` with ``A = G_k 𝓗̂_k``.
    a_y : ndarray, shape (Nt·u, n), complex128
        ``Aᴴ Ȳ_k``.
    """

    KIND: ClassVar[str] = "align_uplink"
    DTYPES: ClassVar[dict[str, np.dtype]] = {"a_gram": COMPLEX, "a_y": COMPLEX}
    a_gram: np.ndarray
    a_y: np.ndarray


@dataclasses.dataclass(frozen=True)
class AlignTest(Message):
    """Downlink test transmission ``Z X̄_test`` (noise is added by the user's channel).

    Attributes
    ----------
    signal : ndarray, shape (Nt·u, n_test), complex128
        ``Z X̄_test`` (``F X̄_test`` under the paper's conventions).
    """

    KIND: ClassVar[str] = "align_test"
    DTYPES: ClassVar[dict[str, np.dtype]] = {"signal": COMPLEX}
    signal: np.ndarray


@dataclasses.dataclass(frozen=True)
class AlignRefit(Message):
    """The test transmission for a user that was never sent pilots in this run (never
    drawn under partial participation): the precoded pilots to fit its equalizer on
    first, then the signal to decode.

    Attributes
    ----------
    pilots : ndarray, shape (Nt·u, n), complex128
        ``F X̄``, as a training downlink carries it (no uplink follows).
    signal : ndarray, shape (Nt·u, n_test), complex128
        The :class:`AlignTest` signal.
    """

    KIND: ClassVar[str] = "align_refit"
    DTYPES: ClassVar[dict[str, np.dtype]] = {"pilots": COMPLEX, "signal": COMPLEX}
    pilots: np.ndarray
    signal: np.ndarray


@dataclasses.dataclass(frozen=True)
class AlignSlot(Message):
    """A deployment slot's test transmission, over the channel at the slot's time, with the
    pilots of an equalizer refresh when one opens the slot (docs/ALGORITHM.md, §6,
    *Channels that move*).

    Attributes
    ----------
    signal : ndarray, shape (Nt·u, n_test), complex128
        The :class:`AlignTest` signal.
    slot : ndarray, shape (1,), int64
        The slot, from 1.
    time : ndarray, shape (1,), float64
        ``t_s``, s after the training channel: the channel the signal goes through.
    pilots : ndarray, shape (Nt·u, p), complex128
        The pilots to re-fit ``G_k`` on first: columns ``columns`` of the pilots the user
        last trained on (``p = 0``: no refresh, decode with the equalizer held).
    columns : ndarray, shape (p,), int64
        Which of the ``n`` pilots ``pilots`` holds, in order.
    fit_time : ndarray, shape (1,), float64
        The channel's time, s, the pilots went through (``time`` for a refresh; earlier
        for what rebuilds a resumed user's equalizer, which no ledger counts).
    """

    KIND: ClassVar[str] = "align_slot"
    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "signal": COMPLEX,
        "slot": INT,
        "time": REAL,
        "pilots": COMPLEX,
        "columns": INT,
        "fit_time": REAL,
    }
    signal: np.ndarray
    slot: np.ndarray
    time: np.ndarray
    pilots: np.ndarray
    columns: np.ndarray
    fit_time: np.ndarray


@dataclasses.dataclass(frozen=True)
class AlignTrack(Message):
    """A ``full`` refresh's training downlink: :class:`AlignPilots` over the channel of
    deployment slot ``slot`` (at ``time`` s), answered with an :class:`AlignUplink`.

    Attributes
    ----------
    signal : ndarray, shape (Nt·u, n), complex128
        ``F X̄``, one column per pilot.
    slot : ndarray, shape (1,), int64
        The slot the refresh opens, from 1.
    time : ndarray, shape (1,), float64
        Its time ``t_s``, s.
    """

    KIND: ClassVar[str] = "align_track"
    DTYPES: ClassVar[dict[str, np.dtype]] = {"signal": COMPLEX, "slot": INT, "time": REAL}
    signal: np.ndarray
    slot: np.ndarray
    time: np.ndarray


@dataclasses.dataclass(frozen=True)
class FeaturePilots(Message):
    """First-K/Top-K/Eigen-K pilots: selected features, whitened and power-normalised.

    ``mean``/``chol`` are the AP's whitening of the selected features (side
    information so that the user can undo it), ``indices`` the Top-K positions
    per sample (empty for First-K, whose positions are fixed), ``feature_dim``
    the AP's latent size for zero-filling, ``basis`` Eigen-K's principal
    directions and latent mean (``d × (k + 1)``, sent once; empty otherwise).

    Attributes
    ----------
    signal : ndarray, shape (Nt·u, n), complex128
        The power-normalised, whitened, compressed selections (``k = min(2·Nt·u, d)``
        values per pilot, ``⌈k/2⌉`` symbols, zero-padded to ``Nt·u``).
    mean : ndarray, shape (⌈k/2⌉, 1), complex128
        The whitening's mean ``μ_s``.
    chol : ndarray, shape (⌈k/2⌉, ⌈k/2⌉), complex128
        The whitening's Cholesky factor ``L_s``.
    indices : ndarray, shape (k, n) or (0, 0), uint16
        Top-K's selected positions per pilot, sorted; empty for First-K and Eigen-K.
    feature_dim : ndarray, shape (1,), int64
        The AP's latent size ``d``.
    basis : ndarray, shape (d, k + 1) or (0, 0), float64
        Eigen-K's directions and the pilot mean as the last column; empty otherwise.
    """

    KIND: ClassVar[str] = "feature_pilots"
    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "signal": COMPLEX,
        "mean": COMPLEX,
        "chol": COMPLEX,
        "indices": INDEX,
        "feature_dim": INT,
        "basis": REAL,
    }
    signal: np.ndarray
    mean: np.ndarray
    chol: np.ndarray
    indices: np.ndarray
    feature_dim: np.ndarray
    basis: np.ndarray


@dataclasses.dataclass(frozen=True)
class FeatureTest(Message):
    """First-K/Top-K test transmission, with Top-K indices as side information.

    (Eigen-K sends it too, without indices.)

    Attributes
    ----------
    signal : ndarray, shape (Nt·u, n_test), complex128
        The test selections, processed as :class:`FeaturePilots`' signal.
    indices : ndarray, shape (k, n_test) or (0, 0), uint16
        Top-K's positions per test sample; empty otherwise.
    """

    KIND: ClassVar[str] = "feature_test"
    DTYPES: ClassVar[dict[str, np.dtype]] = {"signal": COMPLEX, "indices": INDEX}
    signal: np.ndarray
    indices: np.ndarray


@dataclasses.dataclass(frozen=True)
class Ack(Message):
    """A reply that carries no arrays (a baseline user has fitted its map)."""

    KIND: ClassVar[str] = "ack"
    DTYPES: ClassVar[dict[str, np.dtype]] = {}


MESSAGES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        AlignPilots,
        AlignUplink,
        AlignTest,
        AlignRefit,
        AlignSlot,
        AlignTrack,
        FeaturePilots,
        FeatureTest,
        Ack,
    )
}


def message_class(kind: str) -> type[Message]:
    """The message class of ``kind`` (its :attr:`Message.KIND`).

    Parameters
    ----------
    kind : str
        A kind in :data:`MESSAGES`.

    Returns
    -------
    type of Message

    Raises
    ------
    ValueError
        ``kind`` is unknown (the message lists the known ones).
    """
    if kind not in MESSAGES:
        raise ValueError(f"unknown message kind {kind!r}; known: {sorted(MESSAGES)}")
    return MESSAGES[kind]


def decode(kind: str, arrays: dict[str, np.ndarray]) -> Message:
    """Rebuild a message from its kind name and named arrays (the receiving side).

    Parameters
    ----------
    kind : str
        The message kind.
    arrays : dict of str to ndarray
        Exactly the kind's fields.

    Returns
    -------
    Message

    Raises
    ------
    ValueError
        Unknown ``kind``, or names that differ from its fields.
    TypeError
        An array does not have its field's declared dtype.
    """
    return message_class(kind).from_arrays(arrays)

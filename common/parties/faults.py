"""Fault injection: users whose uplink statistics are wrong, to test the consensus rules.

A faulty user trains as usual and then corrupts every array of its uplink:
``scaled`` multiplies it by ``scale``, ``random`` replaces it by complex
Gaussian noise ``scale`` times its own RMS, ``nan`` fills it with NaN. The
corruption is a fixed draw per user and seed, so a run gives the same numbers
in process and under Flower. Baselines that send no uplink (First-K, Top-K:
an acknowledgement only) are unaffected.
"""

from __future__ import annotations

import numpy as np

from common.maths.fading import cn
from common.maths.seeding import Stream, rng
from common.parties import protocol
from common.parties.user import TrainReply, User

FAULT_KINDS = ("scaled", "random", "nan")


def corrupt(message: protocol.Message, kind: str, scale: float, seed: int) -> protocol.Message:
    """``message`` with every complex or real array corrupted as ``kind`` says.

    Integer arrays pass unchanged. ``random`` draws every array from one generator,
    ``rng(seed, Stream.FAULTS)``, in field order, so the same ``seed`` gives the same
    corruption each round.

    Parameters
    ----------
    message : Message
        The honest uplink.
    kind : str
        One of :data:`FAULT_KINDS`: ``scaled`` (× ``scale``), ``random`` (complex or real
        Gaussian noise of ``scale`` × the array's RMS, same dtype) or ``nan``.
    scale : float
        The factor of ``scaled`` and ``random`` (ignored by ``nan``).
    seed : int
        The seed of the ``random`` draw, in ``0..2⁶³−1``.

    Returns
    -------
    Message
        A new message of the same type.

    Raises
    ------
    ValueError
        ``kind`` is not one of :data:`FAULT_KINDS`.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
    generator = rng(seed, Stream.FAULTS)
    arrays = {}
    for name, value in message.arrays().items():
        if value.dtype.kind not in "fc":
            arrays[name] = value
        elif kind == "scaled":
            arrays[name] = value * scale
        elif kind == "nan":
            arrays[name] = np.full_like(value, np.nan)
        else:
            rms = float(np.sqrt(np.mean(np.abs(value) ** 2))) if value.size else 0.0
            if value.dtype.kind == "c":
                noise = cn(value.shape, generator)
            else:
                noise = generator.standard_normal(value.shape)
            arrays[name] = (scale * rms * noise).astype(value.dtype)
    return type(message).from_arrays(arrays)


class FaultyUser:
    """A user (any method's) whose every uplink is corrupted; everything else delegated.

    Every attribute but :meth:`train` is the wrapped user's (``__getattr__``); it is not
    a :class:`~common.parties.user.User` subclass.

    Parameters
    ----------
    user : User
        The honest user.
    kind : str
        One of :data:`FAULT_KINDS`.
    scale : float
        See :func:`corrupt`.
    seed : int
        The run's seed; the corruption's seed is derived from it and the user's index.

    Attributes
    ----------
    kind : str
        As given.
    scale : float
        As given.

    Raises
    ------
    ValueError
        ``kind`` is not one of :data:`FAULT_KINDS`.
    """

    def __init__(self, user: User, kind: str, scale: float, seed: int) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        self._user = user
        self.kind, self.scale = kind, scale
        self._seed = int(np.random.SeedSequence([seed, user.index]).generate_state(1)[0])

    def __getattr__(self, name: str):
        return getattr(self._user, name)

    def train(self, message: protocol.Message) -> TrainReply:
        """The wrapped user's reply, its uplink corrupted (its metrics left honest).

        Parameters
        ----------
        message : Message
            The training downlink.

        Returns
        -------
        TrainReply
            The corrupted uplink and the user's own metrics.

        Raises
        ------
        TypeError, ValueError
            Raised by the wrapped user's :meth:`~common.parties.user.User.train`.
        """
        reply = self._user.train(message)
        return TrainReply(corrupt(reply.message, self.kind, self.scale, self._seed), reply.metrics)

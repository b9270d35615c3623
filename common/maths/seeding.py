"""Named random streams, so every party draws the same numbers in any runtime.

A user's channel, for example, depends only on ``(seed, CHANNEL, user index)``:
the in-process driver and a Flower client on another machine draw the same ``H``.
"""

from __future__ import annotations

import enum
from numbers import Integral

import numpy as np

from common.maths.validation import InvalidValue


class Stream(enum.IntEnum):
    """The purposes random numbers are drawn for; with the seed and an index, one stream each.

    docs/ALGORITHM.md, §5 "Choices where the paper is silent", *Randomness*. The values are
    part of every stream's identity: changing one changes that stream's numbers.
    """

    AP_INIT = 0
    CHANNEL = 1
    EVAL_NOISE = 2
    PILOT_NOISE = 3
    PILOTS = 4  # which training samples serve as semantic pilots
    FAULTS = 5  # the corruption of a faulty user's uplink
    PARTICIPATION = 6  # which users the AP trains with in each round
    CSI = 7  # a user's channel-estimation error and channel ageing
    ASSIGNMENT = 8  # which of a group's models each user runs (users.assignment=random)
    TRACKING = 9  # a user's channel estimate in a deployment slot (tracking.*)
    REFRESH = 10  # which pilots an equalizer refresh sends (tracking.pilots), per slot


MAX_SEED = 2**63 - 1  # results tables store seeds as int64


def check_seed(seed: object, name: str = "seed") -> int:
    """A seed is a whole number in ``0..2⁶³−1`` (what the results tables can store).

    Parameters
    ----------
    seed : object
        The value to check (an integral number; ``bool`` is refused).
    name : str, optional
        The value's name in the error (its configuration key). Default ``"seed"``.

    Returns
    -------
    int
        ``seed`` as a Python int.

    Raises
    ------
    common.maths.validation.InvalidValue
        ``seed`` is not a whole number in ``0..`` :data:`MAX_SEED` (a ``ValueError``).
    """
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise InvalidValue(
            name, f"{name} must be a whole number in 0..{MAX_SEED} (2^63 - 1), got {seed!r}"
        )
    return int(seed)


def rng(seed: int, stream: Stream, index: int = 0, *occasion: int) -> np.random.Generator:
    """A fresh generator for one purpose of one party.

    Seeded with ``[seed, stream, index, *occasion]``, so the same entries give the same
    numbers in every process and runtime (without ``occasion``, the triple's stream).

    Parameters
    ----------
    seed : int
        The run's seed, in ``0..`` :data:`MAX_SEED`.
    stream : Stream
        The purpose.
    index : int, optional
        The party or occasion within the purpose (user k for ``CHANNEL`` and ``CSI``, the
        round for ``PARTICIPATION``, ...), ``>= 0``. Default 0.
    *occasion : int
        Further entries, ``>= 0`` (the deployment slot of a user's ``TRACKING`` stream).

    Returns
    -------
    numpy.random.Generator
        A new generator (numpy's default bit generator).

    Raises
    ------
    common.maths.validation.InvalidValue
        ``seed`` is not a whole number in ``0..`` :data:`MAX_SEED` (a ``ValueError``).
    """
    return np.random.default_rng([check_seed(seed), int(stream), int(index), *map(int, occasion)])

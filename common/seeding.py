"""Named random streams, so every party draws the same numbers in any runtime.

A user's channel, for example, depends only on ``(seed, CHANNEL, user index)``:
the in-process driver and a Flower client on another machine draw the same ``H``.
"""

from __future__ import annotations

import enum
from numbers import Integral

import numpy as np


class Stream(enum.IntEnum):
    AP_INIT = 0
    CHANNEL = 1
    EVAL_NOISE = 2
    PILOT_NOISE = 3


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def rng(seed: int, stream: Stream, index: int = 0) -> np.random.Generator:
    """A fresh generator for one purpose of one party."""
    return np.random.default_rng([check_seed(seed), int(stream), int(index)])

"""Receiver noise: its variance from the SNR, and its samples (the channel models are in
:mod:`common.maths.fading`).

Arguments come from a validated :class:`~common.maths.link.LinkConfig`.
"""

from __future__ import annotations

import math

import numpy as np


def noise_variance(power: float, channel_uses: int, snr_db: float) -> float:
    """``σ² = P / (u · 10^{SNR/10})``; an infinite SNR means no noise."""
    if snr_db == math.inf:
        return 0.0
    return power / (channel_uses * 10.0 ** (snr_db / 10.0))


def complex_noise(shape: tuple[int, ...], sigma2: float, rng: np.random.Generator) -> np.ndarray:
    """Samples of ``CN(0, σ²)``."""
    if sigma2 == 0:
        return np.zeros(shape, dtype=np.complex128)
    return math.sqrt(sigma2 / 2.0) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))

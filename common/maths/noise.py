"""Receiver noise: its variance from the SNR, and its samples (the channel models are in
:mod:`common.maths.fading`).

Arguments come from a validated :class:`~common.maths.link.LinkConfig`.
"""

from __future__ import annotations

import math

import numpy as np


def noise_variance(power: float, channel_uses: int, snr_db: float) -> float:
    """``σ² = P / (u · 10^{SNR/10})``; an infinite SNR means no noise.

    docs/ALGORITHM.md, §2 "Signal-processing blocks", *Noise and SNR*: the SNR is the
    average received SNR per receive antenna and channel use.

    Parameters
    ----------
    power : float
        The power budget ``P`` (linear, average transmit energy per sample).
    channel_uses : int
        The channel uses ``u`` per sample.
    snr_db : float
        The SNR in dB; ``math.inf`` for no noise.

    Returns
    -------
    float
        The noise variance σ² (linear); 0.0 for an infinite SNR.
    """
    if snr_db == math.inf:
        return 0.0
    return power / (channel_uses * 10.0 ** (snr_db / 10.0))


def complex_noise(shape: tuple[int, ...], sigma2: float, rng: np.random.Generator) -> np.ndarray:
    """Samples of ``CN(0, σ²)``.

    Parameters
    ----------
    shape : tuple of int
        The shape of the draw (``(Nr·u, n)`` for a received block).
    sigma2 : float
        The variance σ² (linear, ``>= 0``); each of the real and imaginary parts has
        variance σ²/2.
    rng : numpy.random.Generator
        The stream to draw from; nothing is drawn when ``sigma2 == 0``.

    Returns
    -------
    ndarray, shape ``shape``, complex128
        The noise (zeros when ``sigma2 == 0``).
    """
    if sigma2 == 0:
        return np.zeros(shape, dtype=np.complex128)
    return math.sqrt(sigma2 / 2.0) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))

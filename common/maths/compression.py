"""Complex compression: d real features become ⌈d/2⌉ complex symbols and back.

Features are column-stacked (``d × n``), as in the algorithm's notation.
"""

from __future__ import annotations

import numpy as np


def compressed_dim(d: int) -> int:
    """Number of complex symbols ``m = ⌈d/2⌉`` that carry ``d`` real features."""
    return (d + 1) // 2


def compress(x: np.ndarray) -> np.ndarray:
    """First half of the features → real part, second half → imaginary part.

    An odd ``d`` is zero-padded by one feature at the end, so the last imaginary
    part of every column is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[0]
    m = compressed_dim(d)
    if d % 2:
        x = np.concatenate([x, np.zeros((1, *x.shape[1:]))], axis=0)
    return x[:m] + 1j * x[m:]


def decompress(z: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`compress`: stack real over imaginary parts, drop the padding."""
    z = np.asarray(z)
    if z.shape[0] != compressed_dim(d):
        raise ValueError(
            f"cannot decompress {z.shape[0]} complex rows into d={d} features "
            f"(expected {compressed_dim(d)} rows)"
        )
    return np.concatenate([z.real, z.imag], axis=0)[:d]

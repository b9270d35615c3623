"""Complex compression: d real features become ⌈d/2⌉ complex symbols and back.

Features are column-stacked (``d × n``), as in the algorithm's notation.
"""

from __future__ import annotations

import numpy as np


def compressed_dim(d: int) -> int:
    """Number of complex symbols ``m = ⌈d/2⌉`` that carry ``d`` real features.

    docs/ALGORITHM.md, §2 "Signal-processing blocks", *Complex compression*.

    Parameters
    ----------
    d : int
        The number of real features.

    Returns
    -------
    int
        ``m = ⌈d/2⌉``.
    """
    return (d + 1) // 2


def compress(x: np.ndarray) -> np.ndarray:
    """First half of the features → real part, second half → imaginary part.

    An odd ``d`` is zero-padded by one feature at the end, so the last imaginary
    part of every column is 0. docs/ALGORITHM.md, §2 "Signal-processing blocks",
    *Complex compression* (``c: ℝ^d → ℂ^m``).

    Parameters
    ----------
    x : array_like, shape (d, n) (or (d, ...)), real
        Real features, column-stacked (one column per sample); cast to float64.

    Returns
    -------
    ndarray, shape (m, n), complex128
        ``m = ⌈d/2⌉`` complex symbols per sample: rows ``0..m-1`` of ``x`` as real
        parts, rows ``m..d-1`` (then the padding) as imaginary parts.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[0]
    m = compressed_dim(d)
    if d % 2:
        x = np.concatenate([x, np.zeros((1, *x.shape[1:]))], axis=0)
    return x[:m] + 1j * x[m:]


def decompress(z: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`compress`: stack real over imaginary parts, drop the padding.

    docs/ALGORITHM.md, §2 "Signal-processing blocks", *Complex compression* (``c⁻¹``).

    Parameters
    ----------
    z : array_like, shape (m, n), complex
        Complex symbols, one column per sample.
    d : int
        The number of real features to recover; ``m`` must equal ``⌈d/2⌉``.

    Returns
    -------
    ndarray, shape (d, n), float64
        The real features.

    Raises
    ------
    ValueError
        ``z`` does not have ``⌈d/2⌉`` rows.
    """
    z = np.asarray(z)
    if z.shape[0] != compressed_dim(d):
        raise ValueError(
            f"cannot decompress {z.shape[0]} complex rows into d={d} features "
            f"(expected {compressed_dim(d)} rows)"
        )
    return np.concatenate([z.real, z.imag], axis=0)[:d]

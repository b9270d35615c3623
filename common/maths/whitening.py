"""Pre-whitening fitted on pilots: ``V̄ = L⁻¹(V − μ)`` with ``C = L Lᴴ``.

The covariance is the biased one (``1/n``), so whitened pilots satisfy
``V̄ V̄ᴴ = n I`` exactly when no loading is needed; this makes the AP's
``B = (X̄ X̄ᴴ)⁻¹`` equal to ``I/n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

# Largest condition number of the loaded covariance that we accept: beyond it the
# Cholesky factor exists numerically but whitening amplifies rounding noise.
MAX_CONDITION = 1e12
# Loadings tried, relative to the mean eigenvalue trace(C)/m, after zero.
_RELATIVE_LOADINGS = tuple(10.0**k for k in range(-14, 1))


@dataclass(frozen=True)
class Whitening:
    """Affine whitening map of one party, fitted on its own pilots.

    docs/ALGORITHM.md, §2 "Signal-processing blocks", *Pre-whitening*. Built by
    :func:`fit_whitening`.

    Attributes
    ----------
    mean : ndarray, shape (m, 1), complex128
        The pilots' mean ``μ``.
    chol : ndarray, shape (m, m), complex128
        The lower-triangular Cholesky factor ``L`` of the (loaded) covariance.
    loading : float
        The absolute diagonal loading ``δ`` added to the covariance (0 when none was
        needed).
    """

    mean: np.ndarray  # (m, 1) complex
    chol: np.ndarray  # (m, m) lower-triangular complex
    loading: float  # absolute diagonal loading added to C (0 when none was needed)

    @property
    def dim(self) -> int:
        """The whitened dimension ``m`` (complex)."""
        return self.chol.shape[0]

    def whiten(self, v: np.ndarray) -> np.ndarray:
        """``L⁻¹(V − μ)`` by a triangular solve (no explicit inverse).

        The result is made C-contiguous: LAPACK returns Fortran order, which
        makes every later product with it several times slower.

        Parameters
        ----------
        v : ndarray, shape (m, n), complex
            Compressed latents ``V``, one column per sample.

        Returns
        -------
        ndarray, shape (m, n), complex128
            The whitened latents ``V̄``, C-contiguous.
        """
        out = sla.solve_triangular(self.chol, v - self.mean, lower=True, check_finite=False)
        return np.ascontiguousarray(out)

    def dewhiten(self, v_bar: np.ndarray) -> np.ndarray:
        """``L V̄ + μ``: back to the party's own (compressed) latent coordinates.

        Parameters
        ----------
        v_bar : ndarray, shape (m, n), complex
            Whitened latents ``V̄``, one column per sample.

        Returns
        -------
        ndarray, shape (m, n), complex128
            The compressed latents ``V``.
        """
        return self.chol @ v_bar + self.mean


def _condition_ok(chol: np.ndarray) -> bool:
    diag = np.abs(np.diag(chol))
    return bool(diag.min() > 0 and (diag.max() / diag.min()) ** 2 <= MAX_CONDITION)


def loaded_cholesky(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Cholesky factor of a Hermitian PSD matrix plus the smallest diagonal loading that works.

    Tries 0, then 1e-14 … 1 times the mean eigenvalue, and accepts the first
    loading for which the factorisation succeeds and the condition number is at
    most ``MAX_CONDITION``. Returns ``(L, loading)``. docs/ALGORITHM.md, §2
    "Signal-processing blocks", *Pre-whitening* (the loading ``δ``).

    The condition number is estimated from the factor's diagonal,
    ``(max |L_ii| / min |L_ii|)²``.

    Parameters
    ----------
    matrix : ndarray, shape (m, m), complex
        A Hermitian PSD matrix (its Hermitian part is used).

    Returns
    -------
    chol : ndarray, shape (m, m), complex128
        The lower-triangular ``L`` with ``L Lᴴ = matrix + loading · I``.
    loading : float
        The absolute loading ``δ`` used (0.0 when none was needed).

    Raises
    ------
    ValueError
        The matrix's trace is zero, negative or not finite (e.g. all pilots identical),
        or no loading up to the mean eigenvalue gives a well-conditioned factor.
    """
    size = matrix.shape[0]
    matrix = (matrix + matrix.conj().T) / 2
    scale = float(np.real(np.trace(matrix))) / size
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"cannot factorise a zero {matrix.shape} matrix (all pilots identical?)")
    for loading in (0.0, *(scale * r for r in _RELATIVE_LOADINGS)):
        try:
            chol = np.linalg.cholesky(matrix + loading * np.eye(size))
        except np.linalg.LinAlgError:
            continue
        if _condition_ok(chol):
            return chol, loading
    raise ValueError(f"matrix of shape {matrix.shape} could not be factorised with loading")


def fit_whitening(v: np.ndarray, *, unbiased: bool = False) -> Whitening:
    """Fit ``(μ, L)`` on complex pilots ``V`` (m × n), loading ``C`` only as far as needed.

    ``C`` is the biased ``1/n`` covariance of docs/ALGORITHM.md; ``unbiased`` uses ``1/(n−1)``
    (the paper code's convention). docs/ALGORITHM.md, §2 "Signal-processing blocks",
    *Pre-whitening*; §7 for the ``1/(n−1)`` covariance.

    Parameters
    ----------
    v : array_like, shape (m, n), complex
        Compressed pilots, one column per pilot; cast to complex128.
    unbiased : bool, optional
        Divide the covariance by ``n − 1`` instead of ``n`` (``n`` when ``n = 1``).
        Default False.

    Returns
    -------
    Whitening
        ``μ`` (m × 1), ``L`` (m × m) and the loading used.

    Raises
    ------
    ValueError
        All pilots are identical, their spread around the mean is outside
        ``(1e-150, 1e150)`` (the covariance would under- or overflow), or the covariance
        cannot be factorised (:func:`loaded_cholesky`).
    """
    v = np.asarray(v, dtype=np.complex128)
    mean = v.mean(axis=1, keepdims=True)
    centred = v - mean
    spread = float(np.max(np.abs(centred))) if centred.size else 0.0
    if spread == 0.0:
        raise ValueError(f"all {v.shape[1]} pilots are identical: nothing to whiten")
    if not 1e-150 < spread < 1e150:
        raise ValueError(
            f"pilot latents vary by up to {spread:.3g} around their mean: their covariance "
            "under- or overflows double precision; rescale the latents (e.g. standardise them)"
        )
    divisor = v.shape[1] - 1 if unbiased and v.shape[1] > 1 else v.shape[1]
    chol, loading = loaded_cholesky(centred @ centred.conj().T / divisor)
    return Whitening(mean=mean, chol=chol, loading=loading)

"""The ADMM blocks of federated semantic alignment, as plain functions.

Shapes follow the algorithm: ``X̄ (m × n)`` AP pilots, ``Ȳ_k (m_k × n)`` user
pilots, ``𝓗_k (Nr·u × Nt·u)``, ``F, Z, U (Nt·u × m)``, ``G_k (m_k × Nr·u)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from common.maths.fading import cn
from common.maths.whitening import loaded_cholesky


@dataclass(frozen=True)
class ReceivedMoments:
    """``R Rᴴ`` and ``Ȳ Rᴴ``: all a user needs from the ``n`` received pilots.

    Forming them is the only O(n) work of the G step; the equalizer and the
    objective follow from these small matrices.

    Attributes
    ----------
    gram : ndarray, shape (Nr·u, Nr·u), complex128
        ``R Rᴴ``, made exactly Hermitian.
    cross : ndarray, shape (m_k, Nr·u), complex128
        ``Ȳ Rᴴ``.
    """

    gram: np.ndarray  # R Rᴴ (Nr·u × Nr·u)
    cross: np.ndarray  # Ȳ Rᴴ (m_k × Nr·u)

    @classmethod
    def of(cls, y_bar: np.ndarray, received: np.ndarray) -> ReceivedMoments:
        """The moments of the received pilots ``R`` against the user's targets ``Ȳ``.

        docs/ALGORITHM.md, §3 "Federated ADMM", step 2 (*G step*).

        Parameters
        ----------
        y_bar : ndarray, shape (m_k, n), complex128
            The user's whitened pilots ``Ȳ_k``, one column per pilot.
        received : ndarray, shape (Nr·u, n), complex128
            The received pilots ``R_k = 𝓗_k F X̄``, one column per pilot.

        Returns
        -------
        ReceivedMoments
            ``R Rᴴ`` (symmetrised to be exactly Hermitian) and ``Ȳ Rᴴ``.
        """
        r_h = np.ascontiguousarray(received.conj().T)  # a strided Rᴴ is several times slower
        gram = received @ r_h
        return cls(gram=(gram + gram.conj().T) / 2, cross=y_bar @ r_h)


def equalizer(moments: ReceivedMoments, noise_energy: float) -> np.ndarray:
    """MMSE equalizer ``G = Ȳ Rᴴ (R Rᴴ + nσ² I)⁻¹``.

    Solved as the Hermitian system ``(R Rᴴ + nσ² I) Gᴴ = R Ȳᴴ``; with no noise,
    or when the loaded system is still numerically singular (a very high SNR
    with more receive than transmit dimensions), the minimum-norm least-squares
    solution is used. docs/ALGORITHM.md, §3 "Federated ADMM", step 2 (*G step*).

    Parameters
    ----------
    moments : ReceivedMoments
        ``R Rᴴ`` (Nr·u × Nr·u) and ``Ȳ Rᴴ`` (m_k × Nr·u) of the received pilots.
    noise_energy : float
        ``nσ²``: the number of pilots times the noise variance (linear). ``0`` (or less)
        means no noise: the least-squares solution (``scipy.linalg.lstsq``) is used.

    Returns
    -------
    ndarray, shape (m_k, Nr·u), complex128
        The equalizer ``G_k``.
    """
    gram, rhs = moments.gram, np.ascontiguousarray(moments.cross.conj().T)
    if noise_energy > 0:
        gram = gram + noise_energy * np.eye(gram.shape[0])
        try:
            g_h = np.linalg.solve(gram, rhs)  # small Hermitian PD system (Nr·u unknowns)
        except np.linalg.LinAlgError:
            g_h = None  # numerically singular (very high SNR, Nr > Nt): least squares below
        if g_h is not None and np.all(np.isfinite(g_h)):
            return g_h.conj().T
    g_h = sla.lstsq(gram, rhs, check_finite=False)[0]
    return g_h.conj().T


def equalizer_with(moments: ReceivedMoments, loading: np.ndarray) -> np.ndarray:
    """``G = Ȳ Rᴴ (R Rᴴ + L)⁻¹`` for any (possibly non-Hermitian) loading matrix ``L``.

    The paper code's G step (docs/ALGORITHM.md, §7 "The two conventions", G-step loading),
    with ``L`` from :meth:`common.maths.conventions.Conventions.paper_g_loading`.

    Parameters
    ----------
    moments : ReceivedMoments
        ``R Rᴴ`` (Nr·u × Nr·u) and ``Ȳ Rᴴ`` (m_k × Nr·u) of the received pilots.
    loading : ndarray, shape (Nr·u, Nr·u), complex128
        The matrix ``L`` added to ``R Rᴴ``.

    Returns
    -------
    ndarray, shape (m_k, Nr·u), complex128
        The equalizer ``G_k``, solved directly (no least-squares fallback).

    Raises
    ------
    numpy.linalg.LinAlgError
        ``R Rᴴ + L`` is singular.
    """
    return np.linalg.solve((moments.gram + loading).T, moments.cross.T).T


def g_step(y_bar: np.ndarray, received: np.ndarray, noise_energy: float) -> np.ndarray:
    """The G step from the raw signals (see :func:`equalizer`).

    Parameters
    ----------
    y_bar : ndarray, shape (m_k, n), complex128
        The user's whitened pilots ``Ȳ_k``.
    received : ndarray, shape (Nr·u, n), complex128
        The received pilots ``R_k``.
    noise_energy : float
        ``nσ²`` (linear); ``0``: no noise.

    Returns
    -------
    ndarray, shape (m_k, Nr·u), complex128
        The equalizer ``G_k``.
    """
    return equalizer(ReceivedMoments.of(y_bar, received), noise_energy)


def uplink_statistics(
    g: np.ndarray, h_block: np.ndarray, y_bar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What user k sends: ``Aᴴ A`` and ``Aᴴ Ȳ`` with ``A = G 𝓗``.

    docs/ALGORITHM.md, §3 "Federated ADMM", step 3 (*Uplink*).

    Parameters
    ----------
    g : ndarray, shape (m_k, Nr·u), complex128
        The user's equalizer ``G_k``.
    h_block : ndarray, shape (Nr·u, Nt·u), complex128
        The block channel the user knows, ``𝓗̂_k`` (``𝓗_k`` itself under perfect CSI).
    y_bar : ndarray, shape (m_k, n), complex128
        The user's whitened pilots ``Ȳ_k``.

    Returns
    -------
    a_gram : ndarray, shape (Nt·u, Nt·u), complex128
        ``Aᴴ A``, made exactly Hermitian.
    a_y : ndarray, shape (Nt·u, n), complex128
        ``Aᴴ Ȳ``.
    """
    a_h = np.ascontiguousarray((g @ h_block).conj().T)
    gram = a_h @ a_h.conj().T
    return (gram + gram.conj().T) / 2, a_h @ y_bar


def local_objective(
    y_energy: float, moments: ReceivedMoments, g: np.ndarray, noise_energy: float
) -> tuple[float, float]:
    """User k's term ``‖Ȳ − G R‖² + nσ² ‖G‖²`` and its data-fit part, from the moments.

    ``‖Ȳ − GR‖² = ‖Ȳ‖² − 2 Re tr(Gᴴ Ȳ Rᴴ) + tr(G R Rᴴ Gᴴ)``, with ``‖Ȳ‖²`` precomputed.
    docs/ALGORITHM.md, §1 "The problem" (the objective) and §3, step 3.

    Parameters
    ----------
    y_energy : float
        ``‖Ȳ_k‖²``, the squared Frobenius norm of the user's whitened pilots.
    moments : ReceivedMoments
        ``R Rᴴ`` and ``Ȳ Rᴴ`` of the received pilots.
    g : ndarray, shape (m_k, Nr·u), complex128
        The user's equalizer ``G_k``.
    noise_energy : float
        ``nσ²`` (linear).

    Returns
    -------
    objective : float
        ``‖Ȳ − G R‖² + nσ² ‖G‖²``.
    fit : float
        ``‖Ȳ − G R‖²``, clipped at 0 against rounding.
    """
    cross_term = float(np.real(np.vdot(g, moments.cross)))
    energy = float(np.real(np.vdot(g, g @ moments.gram)))
    fit = max(y_energy - 2 * cross_term + energy, 0.0)
    return fit + noise_energy * float(np.real(np.vdot(g, g))), fit


class HermitianSylvester:
    """Solves ``A F + F B = Q`` for Hermitian PSD ``A`` and Hermitian PD ``B``.

    Both sides are diagonalised (``A = V Λ Vᴴ``, ``B = W Γ Wᴴ``), so
    ``F = V [(Vᴴ Q W) / (λ_i + γ_j)] Wᴴ``. Every denominator is positive, the
    solution is unique, and ``B`` (the AP's ``ρ n (X̄X̄ᴴ)⁻¹``, fixed for a run)
    is decomposed once instead of once per user and round. docs/ALGORITHM.md, §3
    "Federated ADMM", step 4; it agrees with ``scipy.linalg.solve_sylvester``
    (Bartels–Stewart).

    Parameters
    ----------
    b : ndarray, shape (m, m), complex128
        The right-hand coefficient ``B``, Hermitian positive definite (its Hermitian
        part is used).

    Raises
    ------
    ValueError
        ``b`` is not positive definite (its smallest eigenvalue is ≤ 0).
    """

    def __init__(self, b: np.ndarray):
        b = (b + b.conj().T) / 2
        self._gamma, self._w = np.linalg.eigh(b)
        if self._gamma.min() <= 0:
            raise ValueError("the right-hand Sylvester matrix must be positive definite")

    def solve(self, a: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The unique ``F`` with ``A F + F B = Q``.

        Parameters
        ----------
        a : ndarray, shape (p, p), complex128
            The left-hand coefficient ``A``, Hermitian PSD (``Aᴴ A``, ``p = Nt·u``, in the
            F step); its Hermitian part is used and eigenvalues rounded below zero are
            clipped to zero.
        q : ndarray, shape (p, m), complex128
            The right-hand side ``Q``.

        Returns
        -------
        ndarray, shape (p, m), complex128
            The solution ``F``.
        """
        lam, v = np.linalg.eigh((a + a.conj().T) / 2)
        lam = np.clip(lam, 0.0, None)  # A = AᴴA is PSD; clip rounding below zero
        core = (v.conj().T @ q @ self._w) / (lam[:, None] + self._gamma[None, :])
        return v @ core @ self._w.conj().T


@dataclass(frozen=True)
class PilotGeometry:
    """What the AP derives once from its whitened pilots ``X̄``.

    Attributes
    ----------
    x_bar : ndarray, shape (m, n), complex128
        The AP's whitened pilots ``X̄``.
    x_bar_h : ndarray, shape (n, m), complex128
        ``X̄ᴴ``, C-contiguous (used by every local F step).
    b : ndarray, shape (m, m), complex128
        ``B = (X̄ X̄ᴴ)⁻¹`` (with the minimal diagonal loading of
        :func:`~common.maths.whitening.loaded_cholesky` if ``X̄ X̄ᴴ`` is singular).
    sylvester : HermitianSylvester
        The F-step solver, with ``ρ n B`` decomposed once.
    rho : float
        The ADMM penalty ``ρ``.
    """

    x_bar: np.ndarray  # (m, n)
    x_bar_h: np.ndarray  # X̄ᴴ (n, m), contiguous: used by every local F step
    b: np.ndarray  # (X̄ X̄ᴴ)⁻¹
    sylvester: HermitianSylvester
    rho: float

    @classmethod
    def from_pilots(cls, x_bar: np.ndarray, rho: float) -> PilotGeometry:
        """``B = (X̄X̄ᴴ)⁻¹`` and the eigendecomposition of ``ρnB``, once per run.

        docs/ALGORITHM.md, §3 "Federated ADMM", *Initialisation*.

        Parameters
        ----------
        x_bar : ndarray, shape (m, n), complex128
            The AP's whitened pilots ``X̄``.
        rho : float
            The ADMM penalty ``ρ`` (> 0).

        Returns
        -------
        PilotGeometry

        Raises
        ------
        ValueError
            ``X̄X̄ᴴ`` cannot be factorised even with loading (see
            :func:`~common.maths.whitening.loaded_cholesky`), or ``ρ ≤ 0`` (``ρnB`` is
            then not positive definite).
        """
        n = x_bar.shape[1]
        # X̄X̄ᴴ is singular when the pilot covariance was; load it the same minimal way.
        chol, _ = loaded_cholesky(x_bar @ x_bar.conj().T)
        b = sla.cho_solve((chol, True), np.eye(chol.shape[0]))
        b = (b + b.conj().T) / 2
        return cls(
            x_bar=x_bar,
            x_bar_h=np.ascontiguousarray(x_bar.conj().T),
            b=b,
            sylvester=HermitianSylvester(rho * n * b),
            rho=rho,
        )

    @property
    def n(self) -> int:
        """The number of pilots ``n`` (columns of ``X̄``)."""
        return self.x_bar.shape[1]


def local_f_step(
    geometry: PilotGeometry,
    a_gram: np.ndarray,
    a_y: np.ndarray,
    z: np.ndarray,
    u: np.ndarray,
) -> np.ndarray:
    """Solve ``(AᴴA) F_k + F_k (ρnB) = (ρn(Z − U) + (AᴴȲ) X̄ᴴ) B``.

    docs/ALGORITHM.md, §3 "Federated ADMM", step 4 (*Local F step*), solved by
    :class:`HermitianSylvester`.

    Parameters
    ----------
    geometry : PilotGeometry
        The AP's ``X̄``, ``B``, ``ρ`` and F-step solver.
    a_gram : ndarray, shape (Nt·u, Nt·u), complex128
        User k's ``Aᴴ A``.
    a_y : ndarray, shape (Nt·u, n), complex128
        User k's ``Aᴴ Ȳ``.
    z : ndarray, shape (Nt·u, m), complex128
        The projected precoder ``Z``.
    u : ndarray, shape (Nt·u, m), complex128
        The scaled dual ``U``.

    Returns
    -------
    ndarray, shape (Nt·u, m), complex128
        User k's local precoder ``F_k``.
    """
    return geometry.sylvester.solve(a_gram, _f_step_rhs(geometry, a_y, z, u))


def _f_step_rhs(geometry: PilotGeometry, a_y: np.ndarray, z, u) -> np.ndarray:
    """``(ρn(Z − U) + (AᴴȲ) X̄ᴴ) B``, the right-hand side of the local F step."""
    return (geometry.rho * geometry.n * (z - u) + a_y @ geometry.x_bar_h) @ geometry.b


def sylvester_residual(
    geometry: PilotGeometry, a_gram: np.ndarray, a_y: np.ndarray, z, u, f: np.ndarray
) -> float:
    """Relative residual of :func:`local_f_step`'s equation at ``f`` (for checks).

    Parameters
    ----------
    geometry : PilotGeometry
        The AP's ``X̄``, ``B`` and ``ρ``.
    a_gram : ndarray, shape (Nt·u, Nt·u), complex128
        ``Aᴴ A``.
    a_y : ndarray, shape (Nt·u, n), complex128
        ``Aᴴ Ȳ``.
    z, u : ndarray, shape (Nt·u, m), complex128
        The projected precoder ``Z`` and the scaled dual ``U``.
    f : ndarray, shape (Nt·u, m), complex128
        The candidate solution ``F_k``.

    Returns
    -------
    float
        ``‖(AᴴA) F + F (ρnB) − Q‖ / ‖Q‖`` (Frobenius norms), ``Q`` the right-hand side.
    """
    q = _f_step_rhs(geometry, a_y, z, u)
    lhs = a_gram @ f + f @ (geometry.rho * geometry.n * geometry.b)
    return float(np.linalg.norm(lhs - q) / np.linalg.norm(q))


def project_power(v: np.ndarray, power: float) -> np.ndarray:
    """Euclidean projection onto ``{Z : ‖Z‖_F² ≤ P}``.

    docs/ALGORITHM.md, §3 "Federated ADMM", step 6 (*Z step*):
    ``Z = V·min(1, √P / ‖V‖)``.

    Parameters
    ----------
    v : ndarray, shape (Nt·u, m), complex128
        The point to project (``F + U``); any shape works (Frobenius norm).
    power : float
        The power budget ``P`` (linear, average transmit energy per sample).

    Returns
    -------
    ndarray, same shape and dtype as ``v``
        A new array: ``v`` itself (copied) if it is inside the ball, else ``v`` scaled
        onto its surface (norm ``√P`` for any finite ``v``, even one whose norm overflows).
    """
    norm = float(np.linalg.norm(v))
    if norm <= math.sqrt(power):
        return v.copy()
    if math.isinf(norm):  # finite entries whose squares overflow: scale first
        scale = float(np.max(np.abs(v)))
        if math.isfinite(scale):
            return (v / scale) * (math.sqrt(power) / float(np.linalg.norm(v / scale)))
    return v * (math.sqrt(power) / norm)


@dataclass
class ConsensusState:
    """``F, Z, U`` of one precoder (one per AP in federated mode, one per user in multi-link).

    Attributes
    ----------
    f : ndarray, shape (Nt·u, m), complex128
        The consensus precoder ``F``.
    z : ndarray, shape (Nt·u, m), complex128
        Its projection ``Z`` onto the power ball (what the test transmission uses under
        the corrected conventions).
    u : ndarray, shape (Nt·u, m), complex128
        The scaled dual ``U``.
    """

    f: np.ndarray
    z: np.ndarray
    u: np.ndarray

    def arrays(self, suffix: str = "") -> dict[str, np.ndarray]:
        """``F, Z, U`` by name (``F<suffix>``, …), as saved and checkpointed.

        Parameters
        ----------
        suffix : str, optional
            Appended to each name (multi-link: ``"_k"`` for user k's precoder).

        Returns
        -------
        dict of str to ndarray
            ``{"F<suffix>": f, "Z<suffix>": z, "U<suffix>": u}``, the state's own arrays
            (not copies).
        """
        return {f"F{suffix}": self.f, f"Z{suffix}": self.z, f"U{suffix}": self.u}

    @classmethod
    def from_arrays(cls, arrays, suffix: str = "") -> ConsensusState:
        """The state :meth:`arrays` named (copied).

        Parameters
        ----------
        arrays : Mapping of str to array_like
            Holds ``F<suffix>``, ``Z<suffix>`` and ``U<suffix>`` (other keys are ignored).
        suffix : str, optional
            The suffix the names were written with.

        Returns
        -------
        ConsensusState

        Raises
        ------
        KeyError
            One of the three names is missing.
        """
        return cls(*(np.array(arrays[f"{part}{suffix}"]) for part in "FZU"))

    @classmethod
    def initial(cls, shape: tuple[int, int], rng: np.random.Generator) -> ConsensusState:
        """The starting state: ``F`` with i.i.d. ``CN(0, 1)`` entries, ``Z = U = 0``.

        docs/ALGORITHM.md, §3 "Federated ADMM", *Initialisation*.

        Parameters
        ----------
        shape : tuple of int
            ``(Nt·u, m)``.
        rng : numpy.random.Generator
            The stream ``F`` is drawn from (the AP's ``Stream.AP_INIT``).

        Returns
        -------
        ConsensusState
            complex128 arrays of ``shape``.
        """
        f = cn(shape, rng)
        zeros = np.zeros(shape, dtype=np.complex128)
        return cls(f=f, z=zeros, u=zeros.copy())

    def update(
        self,
        local_fs: list[np.ndarray],
        power: float,
        aggregate: Callable[[Sequence[np.ndarray], Sequence[float]], np.ndarray],
        weights: Sequence[float] | None = None,
    ) -> None:
        """Consensus (``aggregate``: the paper's mean or another rule), Z projection and
        scaled dual step, in that order.

        docs/ALGORITHM.md, §3 "Federated ADMM", steps 5–7: ``F = aggregate(F_k)``,
        ``Z = Π_P(F + U)``, ``U ← U + F − Z``. The state is updated in place.

        Parameters
        ----------
        local_fs : list of ndarray, each shape (Nt·u, m), complex128
            The local precoders ``F_k`` of the accepted replies (at least one).
        power : float
            The power budget ``P`` (linear).
        aggregate : callable
            ``aggregate(local_fs, weights) -> F``, e.g. an
            :class:`~common.maths.aggregation.Aggregator`.
        weights : sequence of float, optional
            One weight per local precoder (each user's reliability); ``None``: all 1.

        Raises
        ------
        ValueError
            Raised by ``aggregate`` (an :class:`~common.maths.aggregation.Aggregator`
            refuses an empty ``local_fs``, a weight count that differs from it, or, for
            weighing rules, non-finite or non-positive weights).
        """
        self.f = aggregate(local_fs, [1.0] * len(local_fs) if weights is None else weights)
        self.z = project_power(self.f + self.u, power)
        self.u = self.u + self.f - self.z

    @property
    def primal_residual(self) -> float:
        """The primal residual ``‖F − Z‖`` (Frobenius norm)."""
        return float(np.linalg.norm(self.f - self.z))

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
    """

    gram: np.ndarray  # R Rᴴ (Nr·u × Nr·u)
    cross: np.ndarray  # Ȳ Rᴴ (m_k × Nr·u)

    @classmethod
    def of(cls, y_bar: np.ndarray, received: np.ndarray) -> ReceivedMoments:
        r_h = np.ascontiguousarray(received.conj().T)  # a strided Rᴴ is several times slower
        gram = received @ r_h
        return cls(gram=(gram + gram.conj().T) / 2, cross=y_bar @ r_h)


def equalizer(moments: ReceivedMoments, noise_energy: float) -> np.ndarray:
    """MMSE equalizer ``G = Ȳ Rᴴ (R Rᴴ + nσ² I)⁻¹``.

    Solved as the Hermitian system ``(R Rᴴ + nσ² I) Gᴴ = R Ȳᴴ``; with no noise,
    or when the loaded system is still numerically singular (a very high SNR
    with more receive than transmit dimensions), the minimum-norm least-squares
    solution is used.
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
    """``G = Ȳ Rᴴ (R Rᴴ + L)⁻¹`` for any (possibly non-Hermitian) loading matrix ``L``."""
    return np.linalg.solve((moments.gram + loading).T, moments.cross.T).T


def g_step(y_bar: np.ndarray, received: np.ndarray, noise_energy: float) -> np.ndarray:
    """The G step from the raw signals (see :func:`equalizer`)."""
    return equalizer(ReceivedMoments.of(y_bar, received), noise_energy)


def uplink_statistics(
    g: np.ndarray, h_block: np.ndarray, y_bar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What user k sends: ``Aᴴ A`` and ``Aᴴ Ȳ`` with ``A = G 𝓗``."""
    a_h = np.ascontiguousarray((g @ h_block).conj().T)
    gram = a_h @ a_h.conj().T
    return (gram + gram.conj().T) / 2, a_h @ y_bar


def local_objective(
    y_energy: float, moments: ReceivedMoments, g: np.ndarray, noise_energy: float
) -> tuple[float, float]:
    """User k's term ``‖Ȳ − G R‖² + nσ² ‖G‖²`` and its data-fit part, from the moments.

    ``‖Ȳ − GR‖² = ‖Ȳ‖² − 2 Re tr(Gᴴ Ȳ Rᴴ) + tr(G R Rᴴ Gᴴ)``, with ``‖Ȳ‖²`` precomputed.
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
    is decomposed once instead of once per user and round.
    """

    def __init__(self, b: np.ndarray):
        b = (b + b.conj().T) / 2
        self._gamma, self._w = np.linalg.eigh(b)
        if self._gamma.min() <= 0:
            raise ValueError("the right-hand Sylvester matrix must be positive definite")

    def solve(self, a: np.ndarray, q: np.ndarray) -> np.ndarray:
        lam, v = np.linalg.eigh((a + a.conj().T) / 2)
        lam = np.clip(lam, 0.0, None)  # A = AᴴA is PSD; clip rounding below zero
        core = (v.conj().T @ q @ self._w) / (lam[:, None] + self._gamma[None, :])
        return v @ core @ self._w.conj().T


@dataclass(frozen=True)
class PilotGeometry:
    """What the AP derives once from its whitened pilots ``X̄``."""

    x_bar: np.ndarray  # (m, n)
    x_bar_h: np.ndarray  # X̄ᴴ (n, m), contiguous: used by every local F step
    b: np.ndarray  # (X̄ X̄ᴴ)⁻¹
    sylvester: HermitianSylvester
    rho: float

    @classmethod
    def from_pilots(cls, x_bar: np.ndarray, rho: float) -> PilotGeometry:
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
        return self.x_bar.shape[1]


def local_f_step(
    geometry: PilotGeometry,
    a_gram: np.ndarray,
    a_y: np.ndarray,
    z: np.ndarray,
    u: np.ndarray,
) -> np.ndarray:
    """Solve ``(AᴴA) F_k + F_k (ρnB) = (ρn(Z − U) + (AᴴȲ) X̄ᴴ) B``."""
    return geometry.sylvester.solve(a_gram, _f_step_rhs(geometry, a_y, z, u))


def _f_step_rhs(geometry: PilotGeometry, a_y: np.ndarray, z, u) -> np.ndarray:
    """``(ρn(Z − U) + (AᴴȲ) X̄ᴴ) B``, the right-hand side of the local F step."""
    return (geometry.rho * geometry.n * (z - u) + a_y @ geometry.x_bar_h) @ geometry.b


def sylvester_residual(
    geometry: PilotGeometry, a_gram: np.ndarray, a_y: np.ndarray, z, u, f: np.ndarray
) -> float:
    """Relative residual of :func:`local_f_step`'s equation at ``f`` (for checks)."""
    q = _f_step_rhs(geometry, a_y, z, u)
    lhs = a_gram @ f + f @ (geometry.rho * geometry.n * geometry.b)
    return float(np.linalg.norm(lhs - q) / np.linalg.norm(q))


def project_power(v: np.ndarray, power: float) -> np.ndarray:
    """Euclidean projection onto ``{Z : ‖Z‖_F² ≤ P}``."""
    norm = float(np.linalg.norm(v))
    if norm <= math.sqrt(power):
        return v.copy()
    return v * (math.sqrt(power) / norm)


@dataclass
class ConsensusState:
    """``F, Z, U`` of one precoder (one per AP in federated mode, one per user in multi-link)."""

    f: np.ndarray
    z: np.ndarray
    u: np.ndarray

    def arrays(self, suffix: str = "") -> dict[str, np.ndarray]:
        """``F, Z, U`` by name (``F<suffix>``, …), as saved and checkpointed."""
        return {f"F{suffix}": self.f, f"Z{suffix}": self.z, f"U{suffix}": self.u}

    @classmethod
    def from_arrays(cls, arrays, suffix: str = "") -> ConsensusState:
        """The state :meth:`arrays` named (copied)."""
        return cls(*(np.array(arrays[f"{part}{suffix}"]) for part in "FZU"))

    @classmethod
    def initial(cls, shape: tuple[int, int], rng: np.random.Generator) -> ConsensusState:
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
        scaled dual step, in that order."""
        self.f = aggregate(local_fs, [1.0] * len(local_fs) if weights is None else weights)
        self.z = project_power(self.f + self.u, power)
        self.u = self.u + self.f - self.z

    @property
    def primal_residual(self) -> float:
        return float(np.linalg.norm(self.f - self.z))

"""Two readings of the algorithm: ours (``corrected``, docs/ALGORITHM.md) and the paper code's.

The paper's published code differs from the algorithm as written in a few
places. ``paper`` reproduces those choices so our numbers can be set beside the
published figures; ``corrected`` (the default) follows docs/ALGORITHM.md. The
First-K/Top-K baselines keep their own construction in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.maths.link import LinkConfig

PAPER_BATCH = 512  # the paper code evaluates in batches of this many test samples
NAMES = ("corrected", "paper")


@dataclass(frozen=True)
class Conventions:
    """Which reading a run follows; each property names one difference.

    docs/ALGORITHM.md, §7 "The two conventions" lists every difference and where it is used.
    The module's :data:`CORRECTED` and :data:`PAPER` are the two instances.

    Parameters
    ----------
    name : str
        ``"corrected"`` (docs/ALGORITHM.md) or ``"paper"`` (the paper's published code).

    Attributes
    ----------
    name : str
        The validated name.

    Raises
    ------
    ValueError
        ``name`` is neither ``"corrected"`` nor ``"paper"``.
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"conventions must be 'corrected' or 'paper', got {self.name!r}")

    @property
    def paper(self) -> bool:
        """Whether this is the paper code's reading."""
        return self.name == "paper"

    @property
    def channel_scale(self) -> float:
        """Each entry of H: CN(0, 1) (ours) or real/imaginary std 0.5, power 0.5 (paper)."""
        return 1.0 / math.sqrt(2.0) if self.paper else 1.0

    def noise_variance(self, link: LinkConfig) -> float:
        """σ² of the complex noise: P/(u·SNR) (ours) or σ = √((1/Nr)/SNR)/u (paper).

        docs/ALGORITHM.md, §2 *Noise and SNR* (ours) and §7 (paper: ``1/(Nr·10^{SNR/10}·u²)``,
        independent of ``P``).

        Parameters
        ----------
        link : LinkConfig
            The link's ``P``, ``u``, ``Nr`` and SNR (dB).

        Returns
        -------
        float
            The noise variance σ² (linear); 0 for an infinite SNR.
        """
        if not self.paper:
            return link.noise_variance
        if link.snr_db == math.inf:
            return 0.0
        return (1.0 / link.antennas_rx) / 10.0 ** (link.snr_db / 10.0) / link.channel_uses**2

    def paper_g_loading(self, n: int, link: LinkConfig, size: int) -> np.ndarray:
        """The paper code's G-step term: ``nσ(1+j)`` added to every entry of ``R Rᴴ``.

        (Ours adds ``nσ² I``; see :func:`common.maths.admm.equalizer`.)
        docs/ALGORITHM.md, §7 "The two conventions", G-step loading.

        Parameters
        ----------
        n : int
            The number of pilots.
        link : LinkConfig
            The link, for this convention's :meth:`noise_variance`.
        size : int
            The side of ``R Rᴴ``: ``Nr·u``.

        Returns
        -------
        ndarray, shape (size, size), complex128
            ``nσ(1+j)`` in every entry (for :func:`common.maths.admm.equalizer_with`).
        """
        return n * math.sqrt(self.noise_variance(link)) * (1 + 1j) * np.ones((size, size))

    @property
    def unbiased_covariance(self) -> bool:
        """Whitening covariance with 1/(n−1) (paper) instead of 1/n."""
        return self.paper

    @property
    def test_with_f(self) -> bool:
        """The test transmission uses the unprojected F (paper) instead of Z."""
        return self.paper

    @property
    def shared_initial_f(self) -> bool:
        """Multi-link: every user's precoder starts from the same random F (paper)."""
        return self.paper

    def accuracy(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        """Fraction correct (ours) or the mean over 512-sample batches of the macro average.

        The paper's score averages, per batch of :data:`PAPER_BATCH` test samples, the
        accuracy of each class present in the batch, then averages the batches.

        Parameters
        ----------
        predictions : ndarray, shape (n_test,), int
            Predicted class labels.
        labels : ndarray, shape (n_test,), int
            True class labels.

        Returns
        -------
        float
            The accuracy in [0, 1].
        """
        if not self.paper:
            return float(np.mean(predictions == labels))
        scores = []
        for start in range(0, len(labels), PAPER_BATCH):
            p, y = predictions[start : start + PAPER_BATCH], labels[start : start + PAPER_BATCH]
            scores.append(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))
        return float(np.mean(scores))

    def mse(self, decoded: np.ndarray, clean: np.ndarray, link: LinkConfig) -> float:
        """Mean squared error per entry (ours) or that divided by u (paper).

        Parameters
        ----------
        decoded : ndarray, shape (n_test, d_k), float
            The user's decoded latents.
        clean : ndarray, shape (n_test, d_k), float
            Its clean test latents.
        link : LinkConfig
            The link (its channel uses ``u``, for the paper's reading).

        Returns
        -------
        float
            The MSE (latent units squared).
        """
        mse = float(np.mean((decoded - clean) ** 2))
        return mse / link.channel_uses if self.paper else mse


CORRECTED = Conventions("corrected")
PAPER = Conventions("paper")

"""Two readings of the algorithm: ours (``corrected``, ALGORITHM.md) and the paper code's.

The paper's published code differs from the algorithm as written in a few
places. ``paper`` reproduces those choices so our numbers can be set beside the
published figures; ``corrected`` (the default) follows ALGORITHM.md. The
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
    """Which reading a run follows; each property names one difference."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"conventions must be 'corrected' or 'paper', got {self.name!r}")

    @property
    def paper(self) -> bool:
        return self.name == "paper"

    @property
    def channel_scale(self) -> float:
        """Each entry of H: CN(0, 1) (ours) or real/imaginary std 0.5, power 0.5 (paper)."""
        return 1.0 / math.sqrt(2.0) if self.paper else 1.0

    def noise_variance(self, link: LinkConfig) -> float:
        """σ² of the complex noise: P/(u·SNR) (ours) or σ = √((1/Nr)/SNR)/u (paper)."""
        if not self.paper:
            return link.noise_variance
        if link.snr_db == math.inf:
            return 0.0
        return (1.0 / link.antennas_rx) / 10.0 ** (link.snr_db / 10.0) / link.channel_uses**2

    def paper_g_loading(self, n: int, link: LinkConfig, size: int) -> np.ndarray:
        """The paper code's G-step term: ``nσ(1+j)`` added to every entry of ``R Rᴴ``.

        (Ours adds ``nσ² I``; see :func:`common.maths.admm.equalizer`.)
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
        """Fraction correct (ours) or the mean over 512-sample batches of the macro average."""
        if not self.paper:
            return float(np.mean(predictions == labels))
        scores = []
        for start in range(0, len(labels), PAPER_BATCH):
            p, y = predictions[start : start + PAPER_BATCH], labels[start : start + PAPER_BATCH]
            scores.append(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))
        return float(np.mean(scores))

    def mse(self, decoded: np.ndarray, clean: np.ndarray, link: LinkConfig) -> float:
        """Mean squared error per entry (ours) or that divided by u (paper)."""
        mse = float(np.mean((decoded - clean) ** 2))
        return mse / link.channel_uses if self.paper else mse


CORRECTED = Conventions("corrected")
PAPER = Conventions("paper")

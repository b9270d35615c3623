"""Consensus rules: how the AP combines the users' local precoders ``F_k`` into ``F``.

The paper's rule is the plain mean (ALGORITHM.md, consensus step). The others
trade statistical efficiency for robustness against users whose uplink is
wrong: the coordinate-wise median and trimmed mean (the rules of Flower's
``FedMedian``/``FedTrimmedAvg``, applied to the real and imaginary parts of the
complex matrices separately) and a mean weighted by each user's reliability
(the inverse of the pilot MSE it reports). A rule is chosen by name
(``consensus.aggregator``) or by import path ``package.module:Class`` of an
:class:`Aggregator` subclass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from common.maths import validation
from common.registry import AGGREGATORS


class Aggregator:
    """Combines ``K`` local matrices (stacked as ``K × m × n``) into one ``m × n`` matrix.

    ``weights`` (one per user, positive) are used by the rules that weigh users;
    ``trim_fraction`` is the share of users cut at each end by trimming rules.
    """

    name = ""

    def __init__(self, trim_fraction: float = 0.0) -> None:
        self.trim_fraction = validation.in_range(
            "trim_fraction", trim_fraction, 0, 0.5, "[0, 0.5)", upper_open=True
        )

    def __call__(self, local: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        if not len(local):
            raise ValueError("consensus needs at least one local F")
        if len(weights) != len(local):
            raise ValueError(f"{len(local)} local matrices but {len(weights)} weights")
        return self.combine(np.stack(local), np.asarray(weights, dtype=float))

    def combine(self, stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _per_part(stack: np.ndarray, rule) -> np.ndarray:
    """Apply a real coordinate-wise rule to the real and imaginary parts separately."""
    if np.iscomplexobj(stack):
        return rule(stack.real) + 1j * rule(stack.imag)
    return rule(stack)


@AGGREGATORS.register("mean")
class Mean(Aggregator):
    """``F = mean_k F_k``: the paper's consensus step."""

    name = "mean"

    def combine(self, stack, weights):
        return np.mean(stack, axis=0)


@AGGREGATORS.register("weighted_mean")
class WeightedMean(Aggregator):
    """``F = Σ_k w_k F_k / Σ_k w_k`` with each user's reliability as its weight."""

    name = "weighted_mean"

    def combine(self, stack, weights):
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"weights must be finite and > 0, got {weights.tolist()}")
        return np.tensordot(weights / weights.sum(), stack, axes=1)


@AGGREGATORS.register("median")
class Median(Aggregator):
    """Coordinate-wise median (real and imaginary parts apart): ignores any minority of
    arbitrarily wrong users."""

    name = "median"

    def combine(self, stack, weights):
        return _per_part(stack, lambda part: np.median(part, axis=0))


@AGGREGATORS.register("trimmed_mean")
class TrimmedMean(Aggregator):
    """Coordinate-wise mean after dropping the ``⌊β K⌋`` smallest and largest values."""

    name = "trimmed_mean"

    def combine(self, stack, weights):
        cut = math.floor(self.trim_fraction * stack.shape[0])

        def rule(part: np.ndarray) -> np.ndarray:
            ordered = np.sort(part, axis=0)
            return np.mean(ordered[cut : part.shape[0] - cut], axis=0)

        return _per_part(stack, rule)


def aggregator(name: str, trim_fraction: float) -> Aggregator:
    """The rule called ``name`` (or ``package.module:Class``)."""
    return AGGREGATORS.get(name, subclass_of=Aggregator)(trim_fraction=trim_fraction)

"""Consensus rules: how the AP combines the users' local precoders ``F_k`` into ``F``.

The paper's rule is the plain mean (docs/ALGORITHM.md, consensus step). The others
trade statistical efficiency for robustness against users whose uplink is
wrong: the coordinate-wise median and trimmed mean (the rules of Flower's
``FedMedian``/``FedTrimmedAvg``, applied to the real and imaginary parts of the
complex matrices separately) and a mean weighted by each user's reliability
(the inverse of the pilot MSE it reports). A rule is chosen by name
(``consensus.aggregator``) or by import path ``package.module:Class`` of an
:class:`Aggregator` subclass.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.maths import validation
from common.registry import AGGREGATORS


class Aggregator:
    """Combines ``K`` local matrices (stacked as ``K × m × n``) into one ``m × n`` matrix.

    ``weights`` (one per user, positive) are used by the rules that weigh users;
    ``trim_fraction`` is the share of users cut at each end by trimming rules.

    A subclass implements :meth:`combine` and sets :attr:`name`; it is chosen by
    registering it with ``@AGGREGATORS.register("name")`` (:data:`common.registry.AGGREGATORS`)
    or by its import path ``package.module:Class`` in ``consensus.aggregator``. It is
    built as ``cls(trim_fraction=...)`` (:func:`aggregator`), so a subclass that defines
    its own ``__init__`` must accept that keyword. Calling an instance
    (:meth:`__call__`) checks the inputs and stacks them before :meth:`combine`.

    Parameters
    ----------
    trim_fraction : float, optional
        Share of the users cut at each end by trimming rules, in ``[0, 0.5)``; ignored by
        the others. Default 0.

    Attributes
    ----------
    name : str
        The rule's registered name (class attribute; ``""`` on the base class).
    trim_fraction : float
        The validated ``trim_fraction``.

    Raises
    ------
    common.maths.validation.InvalidValue
        ``trim_fraction`` is not a finite number in ``[0, 0.5)`` (a ``ValueError``).
    """

    name = ""

    def __init__(self, trim_fraction: float = 0.0) -> None:
        self.trim_fraction = validation.in_range(
            "trim_fraction", trim_fraction, 0, 0.5, "[0, 0.5)", upper_open=True
        )

    def __call__(self, local: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """The consensus ``F`` of the local precoders (docs/ALGORITHM.md, §3, step 5).

        Parameters
        ----------
        local : sequence of ndarray, each shape (m, n), complex128
            The local matrices ``F_k`` (``Nt·u × m`` precoders), at least one.
        weights : sequence of float
            One weight per local matrix (each user's reliability, ``1 / pilot MSE``);
            only weighing rules use them.

        Returns
        -------
        ndarray, shape (m, n)
            The combined matrix, of the stack's dtype (complex128 for precoders).

        Raises
        ------
        ValueError
            ``local`` is empty, ``weights`` does not have one entry per local matrix, or
            :meth:`combine` refuses the weights.
        """
        if not len(local):
            raise ValueError("consensus needs at least one local F")
        if len(weights) != len(local):
            raise ValueError(f"{len(local)} local matrices but {len(weights)} weights")
        return self.combine(np.stack(local), np.asarray(weights, dtype=float))

    def trimmed(self, count: int) -> int:
        """How many of ``count`` local matrices the rule cuts at each end (0: none; a
        trimming rule overrides this, and the run's history reports it per round).

        Parameters
        ----------
        count : int
            The number of local matrices combined.

        Returns
        -------
        int
            Values cut at each end of every coordinate, ``>= 0``.
        """
        return 0

    def combine(self, stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The rule itself; every subclass implements it.

        Parameters
        ----------
        stack : ndarray, shape (K, m, n), complex128
            The ``K`` local matrices, stacked along the first axis (at least one).
        weights : ndarray, shape (K,), float64
            One weight per local matrix, in the order of ``stack``.

        Returns
        -------
        ndarray, shape (m, n)
            The combined matrix, of the stack's dtype.

        Raises
        ------
        NotImplementedError
            On the base class.
        """
        raise NotImplementedError


def mean_of(stack: np.ndarray) -> np.ndarray:
    """The mean over the first axis, finite for any finite stack.

    ``numpy.mean`` sums first: two values near the float64 maximum overflow to ``inf``.
    Then the mean is taken of the values divided by the largest real or imaginary part
    (all within ±1, so their mean too) and scaled back.

    Parameters
    ----------
    stack : ndarray, shape (K, ...), float or complex
        The values, stacked along the first axis.

    Returns
    -------
    ndarray, shape stack.shape[1:]
        Their mean.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled below
        out = np.mean(stack, axis=0)
    if np.all(np.isfinite(out)) or not np.all(np.isfinite(stack)):
        return out
    scale = _largest_part(stack)  # every part within ±1 below
    return np.mean(stack / scale, axis=0) * scale


def _largest_part(stack: np.ndarray) -> float:
    """The largest magnitude of a real or imaginary part (dividing by it brings every part
    within ±1, so that any average of them is finite)."""
    parts = (stack.real, stack.imag) if np.iscomplexobj(stack) else (stack,)
    return max(float(np.max(np.abs(part))) for part in parts)


def _median_of(part: np.ndarray) -> np.ndarray:
    """The median over the first axis of a real stack, finite for any finite stack (an
    even count averages the two middle values, which may overflow: then it is taken of
    the halves, exactly, and doubled)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.median(part, axis=0)
    if np.all(np.isfinite(out)) or not np.all(np.isfinite(part)):
        return out
    return np.median(part / 2.0, axis=0) * 2.0


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
        """``mean_k F_k`` over the first axis (the weights are ignored).

        Parameters
        ----------
        stack : ndarray, shape (K, m, n), complex128
            The local matrices.
        weights : ndarray, shape (K,), float64
            Ignored.

        Returns
        -------
        ndarray, shape (m, n), complex128
            The mean (finite for any finite stack: :func:`mean_of`).
        """
        return mean_of(stack)


@AGGREGATORS.register("weighted_mean")
class WeightedMean(Aggregator):
    """``F = Σ_k w_k F_k / Σ_k w_k`` with each user's reliability as its weight."""

    name = "weighted_mean"

    def combine(self, stack, weights):
        """``Σ_k w_k F_k / Σ_k w_k``.

        Parameters
        ----------
        stack : ndarray, shape (K, m, n), complex128
            The local matrices.
        weights : ndarray, shape (K,), float64
            One finite, positive weight per local matrix (normalised here, by the largest
            first, so that weights near the float64 maximum do not overflow their sum).

        Returns
        -------
        ndarray, shape (m, n), complex128
            The weighted mean.

        Raises
        ------
        ValueError
            A weight is not finite or not > 0.
        """
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"weights must be finite and > 0, got {weights.tolist()}")
        scaled = weights / weights.max()  # in (0, 1]: the sum is at most K
        shares = scaled / scaled.sum()
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled below
            out = np.tensordot(shares, stack, axes=1)
        if np.all(np.isfinite(out)) or not np.all(np.isfinite(stack)):
            return out
        scale = _largest_part(stack)  # values near the float64 maximum: average within ±1
        return np.tensordot(shares, stack / scale, axes=1) * scale


@AGGREGATORS.register("median")
class Median(Aggregator):
    """Coordinate-wise median (real and imaginary parts apart): ignores any minority of
    arbitrarily wrong users."""

    name = "median"

    def combine(self, stack, weights):
        """Coordinate-wise median over the first axis, real and imaginary parts apart.

        For an even ``K`` each coordinate is the mean of its two middle values
        (``numpy.median``); the weights are ignored.

        Parameters
        ----------
        stack : ndarray, shape (K, m, n), complex128 or float
            The local matrices.
        weights : ndarray, shape (K,), float64
            Ignored.

        Returns
        -------
        ndarray, shape (m, n)
            The median, complex128 for a complex stack.
        """
        return _per_part(stack, _median_of)


@AGGREGATORS.register("trimmed_mean")
class TrimmedMean(Aggregator):
    """Coordinate-wise mean after dropping the ``⌊β K⌋`` smallest and largest values."""

    name = "trimmed_mean"

    def trimmed(self, count: int) -> int:
        """``⌊β K⌋`` of ``K = count`` values cut at each end."""
        return math.floor(self.trim_fraction * count)

    def combine(self, stack, weights):
        """Coordinate-wise mean of what remains after cutting ``⌊β K⌋`` values at each end.

        ``β`` is :attr:`trim_fraction` (< 0.5, so at least one value remains); real and
        imaginary parts are sorted and averaged apart; the weights are ignored.

        Parameters
        ----------
        stack : ndarray, shape (K, m, n), complex128 or float
            The local matrices.
        weights : ndarray, shape (K,), float64
            Ignored.

        Returns
        -------
        ndarray, shape (m, n)
            The trimmed mean, complex128 for a complex stack.
        """
        cut = self.trimmed(stack.shape[0])

        def rule(part: np.ndarray) -> np.ndarray:
            ordered = np.sort(part, axis=0)
            return mean_of(ordered[cut : part.shape[0] - cut])

        return _per_part(stack, rule)


def aggregator(name: str, trim_fraction: float = 0.0, **options: Any) -> Aggregator:
    """The rule called ``name`` (or ``package.module:Class``).

    Parameters
    ----------
    name : str
        A registered name (``mean``, ``weighted_mean``, ``median``, ``trimmed_mean``) or
        the import path ``package.module:Class`` of an :class:`Aggregator` subclass.
    trim_fraction : float
        Passed to the rule's constructor as ``trim_fraction=``, in ``[0, 0.5)``.
    **options
        More settings (the ``consensus`` section's); each one the rule's constructor takes
        by name is passed to it, the others are left out.

    Returns
    -------
    Aggregator
        A new instance of the rule.

    Raises
    ------
    ValueError
        ``name`` is unknown, cannot be imported, or does not name an :class:`Aggregator`
        subclass (:meth:`common.registry.Registry.get`); or ``trim_fraction`` is out of
        range (:class:`~common.maths.validation.InvalidValue`).
    """
    rule = AGGREGATORS.get(name, subclass_of=Aggregator)
    parameters = inspect.signature(rule).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    given = {"trim_fraction": trim_fraction, **options}
    return rule(**{k: v for k, v in given.items() if takes_all or k in parameters})

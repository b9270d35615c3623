"""Argument checks that fail early with the argument's name, its value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np


class InvalidValue(ValueError):
    """A named value is invalid; ``name`` says which, so callers can name its config key.

    A ``ValueError``, so callers that catch ``ValueError`` catch it too.

    Parameters
    ----------
    name : str
        Which value is invalid.
    message : str
        What is wrong and what is allowed (the exception's text).

    Attributes
    ----------
    name : str
        As given.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    def __reduce__(self):
        # raised in a worker process and reported in another: rebuilt with both arguments
        return type(self), (self.name, str(self)), self.__dict__


def positive_int(name: str, value: object, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise if it is not a whole number in ``1..maximum``.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check: an integral number (``bool`` is refused).
    maximum : int, optional
        The largest allowed value; ``None`` (default): no upper bound.

    Returns
    -------
    int
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not integral, is below 1 or is above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise InvalidValue(name, f"{name} must be a whole number >= 1, got {value!r}")
    if maximum is not None and int(value) > maximum:
        raise InvalidValue(name, f"{name} must be at most {maximum:,}, got {value!r}")
    return int(value)


def whole_number(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise if it is not a whole number ≥ 0.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check: an integral number (``bool`` is refused).

    Returns
    -------
    int
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not integral or is negative.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 0:
        raise InvalidValue(name, f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def in_range(
    name: str, value: object, low: float, high: float, allowed: str, *, upper_open: bool = False
) -> float:
    """A finite real number in ``[low, high]`` (``[low, high)`` with ``upper_open``);
    ``allowed`` says so in the error.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check: a real number (``bool`` is refused).
    low, high : float
        The bounds.
    allowed : str
        The allowed range as the message writes it (e.g. ``"[0, 0.5)"``).
    upper_open : bool, optional
        Exclude ``high``. Default False.

    Returns
    -------
    float
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not a finite real number within the bounds.
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low <= value < high if upper_open else low <= value <= high
    if not ok:
        raise InvalidValue(name, f"{name} must be in {allowed}, got {value!r}")
    return float(value)


def one_of(name: str, value: object, allowed: Sequence[str]) -> str:
    """One of the ``allowed`` names.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check.
    allowed : sequence of str
        The allowed names.

    Returns
    -------
    str
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not in ``allowed``.
    """
    if value not in allowed:
        raise InvalidValue(name, f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not finite and > 0.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check: a real number (``bool`` is refused).

    Returns
    -------
    float
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not a finite real number, or is ≤ 0.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise InvalidValue(name, f"{name} must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise InvalidValue(name, f"{name} must be > 0, got {value!r}")
    return float(value)


SNR_RANGE_DB = (-50.0, 100.0)  # beyond: noise or signal underflows what a run can use


def snr_db(name: str, value: object) -> float:
    """An SNR in dB within :data:`SNR_RANGE_DB`, or +inf (noise-free); never NaN.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The SNR in dB: a real number (``bool`` is refused).

    Returns
    -------
    float
        The SNR in dB (``inf`` for no noise).

    Raises
    ------
    InvalidValue
        ``value`` is not a real number, is NaN, or is neither ``+inf`` nor within
        :data:`SNR_RANGE_DB` (``[-50, 100]`` dB).
    """
    low, high = SNR_RANGE_DB
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
        raise InvalidValue(
            name, f"{name} must be a number in dB (or inf for no noise), got {value!r}"
        )
    if value != math.inf and not low <= value <= high:
        raise InvalidValue(
            name, f"{name} must be in [{low:g}, {high:g}] dB (or inf for no noise), got {value!r}"
        )
    return float(value)


def boolean(name: str, value: object) -> bool:
    """A true/false switch; strings such as ``"no"`` are refused rather than read as true.

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check: a ``bool`` or ``numpy.bool_``.

    Returns
    -------
    bool
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not a boolean.
    """
    if not isinstance(value, bool | np.bool_):
        raise InvalidValue(name, f"{name} must be true or false, got {value!r}")
    return bool(value)


def fraction(name: str, value: object) -> float:
    """A fraction in (0, 1].

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : object
        The value to check: a real number (``bool`` is refused).

    Returns
    -------
    float
        ``value``, converted.

    Raises
    ------
    InvalidValue
        ``value`` is not a real number in ``(0, 1]`` (NaN included).
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value <= 1:
        raise InvalidValue(name, f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def non_finite(value: np.ndarray) -> int:
    """How many NaN/Inf entries a float or complex array holds (0 for any other dtype).

    Parameters
    ----------
    value : array_like
        Any array (or value numpy can make one of).

    Returns
    -------
    int
        The number of non-finite entries (a complex entry counts once).
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "fc":
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def finite_matrix(name: str, value: np.ndarray, *, ndim: int = 2) -> np.ndarray:
    """Reject arrays of the wrong rank or with NaN/Inf entries (they poison every solve).

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error (its config key).
    value : array_like
        The array to check (latents: ``N × d``, one row per sample).
    ndim : int, optional
        The required number of dimensions. Default 2.

    Returns
    -------
    ndarray
        ``numpy.asarray(value)``, dtype unchanged.

    Raises
    ------
    InvalidValue
        The array has another number of dimensions, is empty, or holds NaN/Inf.
    """
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise InvalidValue(name, f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidValue(name, f"{name} must not be empty, got shape {arr.shape}")
    if bad := non_finite(arr):
        raise InvalidValue(name, f"{name} contains {bad} NaN/Inf entries; latents must be finite")
    return arr


FLOAT32_SCALE = (1e-30, 1e38)  # latents kept as float32: beyond, they flush to 0 or inf


def float32_scale(name: str, value: np.ndarray) -> np.ndarray:
    """Refuse latents whose scale float32 cannot keep (they are stored as float32): the
    largest magnitude must lie in :data:`FLOAT32_SCALE` (an all-zero array passes, for
    the whitening to name).

    Checked before the cast, so that the message names the latents' own scale (after it,
    1e200 became ``inf`` and 1e-200 became 0: "vary by up to nan", "all pilots are
    identical").

    Parameters
    ----------
    name : str
        The value's name, used in the message and kept on the error.
    value : array_like
        Finite latents (:func:`finite_matrix`), any float dtype.

    Returns
    -------
    ndarray
        ``numpy.asarray(value)``, dtype unchanged.

    Raises
    ------
    InvalidValue
        The largest magnitude is outside ``[1e-30, 1e38]`` and not 0.
    """
    arr = np.asarray(value)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    low, high = FLOAT32_SCALE
    if peak != 0.0 and not low <= peak <= high:
        raise InvalidValue(
            name,
            f"{name} reach {peak:.3g} in magnitude, outside what float32 (how latents are "
            f"kept) holds without flushing to 0 or inf, [{low:g}, {high:g}]: rescale the "
            "latents",
        )
    return arr


def distinct_columns(matrix: np.ndarray) -> int:
    """How many different columns (samples) ``matrix`` has.

    Columns are compared by their bytes (so ``0.0`` and ``-0.0`` differ).

    Parameters
    ----------
    matrix : array_like, shape (d, n)
        Features × samples (e.g. the ``d_k × n`` float32 pilots).

    Returns
    -------
    int
        The number of distinct columns, in ``0..n``.
    """
    rows = np.ascontiguousarray(np.asarray(matrix).T)
    return len({row.tobytes() for row in rows})

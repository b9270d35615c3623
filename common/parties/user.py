"""A user: its private latents, whitening, channel and classifier, and how it is evaluated.

:class:`User` is what every method's user shares; each method family subclasses
it with how it trains on the AP's pilots and how it decodes a test transmission
(:class:`~common.parties.consensus.AdmmUser`,
:class:`~common.parties.feature_selection.FeatureMapUser`). The in-process driver
calls users directly; the Flower client wraps one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from common.maths import noise, validation
from common.maths.compression import compress
from common.maths.conventions import CORRECTED, Conventions
from common.maths.fading import (
    PERFECT_CSI,
    RAYLEIGH,
    ChannelConfig,
    CsiConfig,
    LinkChannels,
    draw_link_channels,
)
from common.maths.link import LinkConfig
from common.maths.seeding import Stream, rng
from common.maths.whitening import Whitening, fit_whitening
from common.parties import protocol

Predict = Callable[[np.ndarray], np.ndarray]
"""Maps latents (N × d_k, float32) to class predictions (N,)."""


ASSETS = "assets"  # a user's evaluation metric: its assets' fingerprint, as a number


def assets_metric(fingerprint: str) -> dict[str, float]:
    """A user's assets fingerprint as an evaluation metric (Flower's metrics are numbers).

    Parameters
    ----------
    fingerprint : str
        12 hex digits (:attr:`UserData.fingerprint`), or ``''`` when unknown.

    Returns
    -------
    dict of str to float
        ``{ASSETS: the fingerprint as a number}`` (48 bits: exact in a float), or empty.
    """
    return {ASSETS: float(int(fingerprint, 16))} if fingerprint else {}


def assets_fingerprint(metrics: Mapping[str, float]) -> str:
    """The fingerprint a user reported with its evaluation (:func:`assets_metric`).

    Parameters
    ----------
    metrics : mapping of str to float
        The user's evaluation metrics.

    Returns
    -------
    str
        12 hex digits, or ``''`` when the user reported none.
    """
    value = metrics.get(ASSETS)
    return f"{int(value):012x}" if value is not None else ""


@dataclass(frozen=True)
class UserData:
    """A user's private inputs: pilot latents, test latents and labels, head.

    Attributes
    ----------
    name : str
        The user's model name.
    pilots : ndarray, shape (n, d_k), float
        Clean latents of the semantic pilots, one row per pilot (the AP's pilot order).
    test : ndarray, shape (n_test, d_k), float
        Clean test latents, one row per test sample.
    test_labels : ndarray, shape (n_test,), int
        The test samples' class labels.
    predict : Predict
        The user's classifier head (latents ``N × d_k`` float32 → labels ``(N,)``).
    fingerprint : str
        A short checksum (12 hex digits) of the user's assets, its latents and head, so
        that two runs can tell whether they ran on the same zoo; empty when unknown.
    """

    name: str
    pilots: np.ndarray  # (n, d_k) clean latents of the semantic pilots
    test: np.ndarray  # (n_test, d_k) clean test latents
    test_labels: np.ndarray  # (n_test,)
    predict: Predict
    fingerprint: str = ""


@dataclass(frozen=True)
class PreparedData:
    """A user's inputs made ready for any run (:meth:`User.prepare`).

    Its arrays are only read, so one copy can serve every run over the same
    data and, memory-mapped, every process on a machine.

    Attributes
    ----------
    name : str
        The user's model name.
    pilots : ndarray, shape (d_k, n), float32
        The pilot latents, one column per sample.
    test : ndarray, shape (n_test, d_k), float
        Clean test latents, one row per sample.
    test_labels : ndarray, shape (n_test,), int
        The test labels.
    predict : Predict
        The classifier head.
    distinct_pilots : int
        How many different pilot columns there are.
    whitening : Whitening
        The user's whitening ``(μ_k, L_k)`` of its compressed pilots (``m_k``-dimensional).
    derived : Mapping of str to ndarray
        What the method family's :meth:`User.derive` computed.
    derived_by : str
        The qualified name of that ``derive`` (checked against the class that uses it).
    unbiased_covariance : bool
        Whether the whitening used the ``1/(n−1)`` covariance.
    fingerprint : str
        :attr:`UserData.fingerprint` of the data it was made from.
    """

    name: str
    pilots: np.ndarray  # (d_k, n) float32: the pilot latents, one column per sample
    test: np.ndarray  # (n_test, d_k) clean test latents
    test_labels: np.ndarray  # (n_test,)
    predict: Predict
    distinct_pilots: int
    whitening: Whitening
    derived: Mapping[str, np.ndarray]  # a method family's own (User.derive)
    derived_by: str  # the qualified name of the derive() that made ``derived``
    unbiased_covariance: bool  # the conventions' covariance the whitening used
    fingerprint: str = ""  # the assets' checksum (UserData.fingerprint)


@dataclass(frozen=True)
class TrainReply:
    """What a user answers to a training downlink: the uplink message and its metrics.

    Attributes
    ----------
    message : Message
        The uplink (``AlignUplink`` for ADMM users, ``Ack`` for the baselines).
    metrics : dict of str to float
        Scalar metrics: ``objective`` (ADMM), ``pilot_mse`` and
        :meth:`User.pilot_metrics`.
    """

    message: protocol.Message
    metrics: dict[str, float]


class User(abc.ABC):
    """User ``k`` of the protocol, holding everything that never leaves it.

    Subclasses name the message kinds they train and test on and implement
    :meth:`train` and :meth:`decode`; what they learn travels between processes
    through :meth:`export_state`/:meth:`import_state` (Flower keeps it in the
    node's context).

    A subclass (one per method family, named by its AP's ``user_class``) provides:

    - ``TRAIN_KIND`` and ``TEST_KIND``: the :attr:`~common.parties.protocol.Message.KIND`
      of the downlinks it trains on and decodes (:meth:`evaluate` checks the latter);
    - :meth:`train`, :meth:`decode`, :meth:`export_state` and :meth:`import_state`
      (abstract);
    - optionally :meth:`derive`, what it computes once from its pilots (read back from
      ``self.prepared.derived``);
    - if it defines ``__init__``, the same arguments, passed on to ``super().__init__``
      (the session builds every user class alike).

    Subclasses use :meth:`receive` for noisy reception and :meth:`pilot_metrics` in
    their training metrics.

    Parameters
    ----------
    index : int
        The user's index ``k`` (its random streams' index).
    data : UserData or PreparedData
        Its inputs; raw :class:`UserData` are prepared here (:meth:`prepare`).
    link : LinkConfig
        Antennas, channel uses, SNR and power of the link.
    seed : int
        The run's seed (the user's channel, CSI and noise streams).
    conventions : Conventions, optional
        The reading of the algorithm (default: corrected).
    channel_config : ChannelConfig, optional
        The channel model (default: static i.i.d. Rayleigh).
    csi : CsiConfig, optional
        The user's channel knowledge (default: perfect).

    Attributes
    ----------
    TRAIN_KIND, TEST_KIND : str
        The message kinds it trains on and is tested with (class attributes).
    index : int
        ``k``.
    link : LinkConfig
        As given.
    seed : int
        As given.
    conventions : Conventions
        As given.
    noise_variance : float
        σ² of the receiver noise (linear), per the conventions.
    prepared : PreparedData
        The user's prepared inputs.
    name : str
        The user's model name.
    dim : int
        Its latent size ``d_k``.
    distinct_pilots : int
        How many different pilots it holds.
    whitening : Whitening
        Its whitening ``(μ_k, L_k)``.
    h_block : ndarray, shape (Nr·u, Nt·u), complex128
        The true training channel ``𝓗_k`` (what the pilots go through).
    h_known : ndarray, shape (Nr·u, Nt·u), complex128
        The user's knowledge ``𝓗̂_k`` of it.
    h_test : ndarray, shape (Nr·u, Nt·u), complex128
        The true test-time channel ``𝓗_k^{test}``.

    Raises
    ------
    ValueError
        ``data`` was prepared by another class's :meth:`derive` or with another
        covariance than the conventions'; raw ``data`` that :meth:`prepare` refuses.
    common.maths.validation.InvalidValue
        ``seed`` is not a whole number in ``0..2⁶³−1`` (a ``ValueError``).
    """

    TRAIN_KIND: ClassVar[str] = ""
    TEST_KIND: ClassVar[str] = ""
    # a test transmission that carries pilots to fit on first, for a user never sent
    # pilots in this run ('': the method has none, such a user cannot be evaluated)
    REFIT_KIND: ClassVar[str] = ""
    # a deployment slot's transmission, and a full refresh's training downlink ('': the
    # method has no deployment phase, tracking.*)
    SLOT_KIND: ClassVar[str] = ""
    TRACK_KIND: ClassVar[str] = ""

    def __init__(
        self,
        index: int,
        data: UserData | PreparedData,
        link: LinkConfig,
        seed: int,
        *,
        conventions: Conventions = CORRECTED,
        channel_config: ChannelConfig = RAYLEIGH,
        csi: CsiConfig = PERFECT_CSI,
    ):
        self.index = int(index)
        self.link = link
        self.seed = seed
        self.conventions = conventions
        self.noise_variance = conventions.noise_variance(link)
        if isinstance(data, UserData):
            data = type(self).prepare(index, data, conventions)
        self._check_prepared(data)
        self.prepared = data
        self.name = data.name
        self._pilots = data.pilots  # (d_k, n) float32
        self._test = data.test
        self._labels = data.test_labels
        self._predict = data.predict
        self.dim = data.pilots.shape[0]
        self.distinct_pilots = data.distinct_pilots
        self.fingerprint = data.fingerprint
        self.whitening = data.whitening
        self._channel_config, self._csi = channel_config, csi
        channels = draw_link_channels(
            channel_config,
            csi,
            link.antennas_rx,
            link.antennas_tx,
            link.channel_uses,
            rng(seed, Stream.CHANNEL, index),
            rng(seed, Stream.CSI, index),
            scale=conventions.channel_scale,
        )
        self.h_block = channels.train  # what the pilots really go through
        self.h_known = channels.known  # what the user knows of it (its estimate)
        self.h_test = channels.test  # what the test transmission goes through
        self._at: tuple[tuple[int, float], LinkChannels] | None = None  # the last channels_at
        self._clean_accuracy: float | None = None  # the head's on the clean test latents

    @classmethod
    def prepare(cls, index: int, data: UserData, conventions: Conventions) -> PreparedData:
        """Everything user ``index`` derives from its inputs alone, before any round.

        It depends on the data, the class and the conventions' covariance, not on
        the link, channel or seed of a run: every run (sweep point) over the same
        data can use one, and the processes of a simulation share it.

        The pilots are stored as ``d_k × n`` float32 columns, whitened after complex
        compression (docs/ALGORITHM.md, §2, *Pre-whitening*), and :meth:`derive` runs on them.

        Parameters
        ----------
        index : int
            The user's index (for the messages).
        data : UserData
            Its raw inputs.
        conventions : Conventions
            The conventions (only their covariance, biased or unbiased, matters).

        Returns
        -------
        PreparedData

        Raises
        ------
        common.maths.validation.InvalidValue
            The pilot or test latents are not a non-empty 2-D array of finite values, or
            their scale is beyond float32's (a ``ValueError``).
        ValueError
            The pilot and test latents have different feature counts, or the whitening
            cannot be fitted (:func:`~common.maths.whitening.fit_whitening`).
        """
        pilots, test = (
            validation.float32_scale(name, validation.finite_matrix(name, latents))
            for name, latents in (
                (f"user {index} ({data.name}) pilot latents", data.pilots),
                (f"user {index} ({data.name}) test latents", data.test),
            )
        )
        if pilots.shape[1] != test.shape[1]:
            raise ValueError(
                f"user {index} ({data.name}): pilot latents have {pilots.shape[1]} features "
                f"but test latents have {test.shape[1]}"
            )
        columns = np.ascontiguousarray(pilots.T, dtype=np.float32)  # (d_k, n), kept small
        whitening = fit_whitening(compress(columns), unbiased=conventions.unbiased_covariance)
        return PreparedData(
            name=data.name,
            pilots=columns,
            test=test,
            test_labels=np.asarray(data.test_labels),
            predict=data.predict,
            # fewer distinct pilots than latent dimensions: the whitening is mostly loading
            distinct_pilots=validation.distinct_columns(columns),
            whitening=whitening,
            derived=cls.derive(columns, whitening),
            derived_by=cls.derive.__qualname__,
            unbiased_covariance=conventions.unbiased_covariance,
            fingerprint=data.fingerprint,
        )

    @classmethod
    def derive(cls, pilots: np.ndarray, whitening: Whitening) -> dict[str, np.ndarray]:
        """What a method family computes once from its pilots (``d_k × n``) besides.

        Overridable; the base class derives nothing. The result is stored in
        :attr:`PreparedData.derived` and must depend only on the arguments.

        Parameters
        ----------
        pilots : ndarray, shape (d_k, n), float32
            The user's pilot latents, one column per sample.
        whitening : Whitening
            The user's whitening of its compressed pilots.

        Returns
        -------
        dict of str to ndarray
            Named arrays (empty here).
        """
        return {}

    def _check_prepared(self, data: PreparedData) -> None:
        """Refuse prepared inputs made for another class's :meth:`derive` or covariance."""
        own = type(self).derive.__qualname__
        if data.derived_by != own:
            raise ValueError(
                f"user {self.index}: inputs prepared by {data.derived_by}, "
                f"but {type(self).__name__} needs {own}"
            )
        if data.unbiased_covariance != self.conventions.unbiased_covariance:
            raise ValueError(
                f"user {self.index}: inputs prepared with unbiased_covariance="
                f"{data.unbiased_covariance}, but the run's conventions use "
                f"{self.conventions.unbiased_covariance}"
            )

    def pilot_metrics(self) -> dict[str, float]:
        """What every training reply says about this user's pilots: the whitening's loading,
        and how many distinct pilots it has against the whitened dimension.

        Returns
        -------
        dict of str to float
            ``whitening_loading`` (the absolute loading δ), ``distinct_pilots`` and
            ``whitened_dim`` (``m_k``).
        """
        return {
            "whitening_loading": self.whitening.loading,
            "distinct_pilots": float(self.distinct_pilots),
            "whitened_dim": float(self.whitening.chol.shape[0]),
        }

    @property
    def n_pilots(self) -> int:
        """The number of pilots ``n``."""
        return self._pilots.shape[1]

    # ---- what a method family defines ---------------------------------------------------
    @abc.abstractmethod
    def train(self, message: protocol.Message) -> TrainReply:
        """Answer one training downlink with the message the algorithm lets leave the device.

        Implementations check the message (``self._expect(message, self.TRAIN_KIND)``
        and ``self._check_pilot_count(message.signal)``) and keep what they learn.

        Parameters
        ----------
        message : Message
            The downlink of kind ``TRAIN_KIND`` (its ``signal``: ``Nt·u × n`` complex128).

        Returns
        -------
        TrainReply
            The uplink message and the scalar metrics.

        Raises
        ------
        TypeError
            The message is not of kind ``TRAIN_KIND``.
        ValueError
            The signal does not hold ``n`` pilots of ``Nt·u`` symbols.
        """

    @abc.abstractmethod
    def decode(self, message: protocol.Message) -> np.ndarray:
        """Turn a test transmission into latents in this user's space (n_test × d_k).

        Called by :meth:`evaluate`, which has checked the message kind; receive the
        signal with ``self.receive(message.signal, Stream.EVAL_NOISE)``.

        Parameters
        ----------
        message : Message
            The test transmission, of kind ``TEST_KIND`` (``Nt·u × n_test`` signal).

        Returns
        -------
        ndarray, shape (n_test, d_k), float
            The decoded latents, one row per test sample.

        Raises
        ------
        RuntimeError
            Nothing was learned yet (no training round reached this user).
        """

    @abc.abstractmethod
    def export_state(self) -> dict[str, np.ndarray]:
        """What the user learned so far, as named arrays.

        Returns
        -------
        dict of str to ndarray
            Empty when nothing was learned yet; :meth:`import_state` takes it back.
        """

    @abc.abstractmethod
    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`export_state` returned (an empty dict: nothing learned yet).

        Parameters
        ----------
        state : dict of str to ndarray
            What :meth:`export_state` returned, possibly in another process.
        """

    # ---- shared by every method -----------------------------------------------------------
    def _expect(self, message: protocol.Message, kind: str, *others: str) -> None:
        if message.KIND not in (kind, *filter(None, others)):
            raise TypeError(
                f"user {self.index} ({type(self).__name__}) expects {kind!r} messages, "
                f"got {message.KIND!r}"
            )

    def _check_pilot_count(self, signal: np.ndarray) -> None:
        if signal.shape[1] != self.n_pilots:
            raise ValueError(
                f"user {self.index} ({self.name}) holds {self.n_pilots} pilots but the AP sent "
                f"{signal.shape[1]}: both sides must use the same pilot_fraction and seed"
            )
        if signal.shape[0] != self.link.tx_dim:
            raise ValueError(
                f"user {self.index}: downlink has {signal.shape[0]} symbols per sample, "
                f"expected Nt·u = {self.link.tx_dim}"
            )

    def channels_at(self, time: float, slot: int) -> LinkChannels:
        """The user's channel ``time`` s after training, and its estimate of it in deployment
        slot ``slot`` (docs/ALGORITHM.md, §6, *Channels that move*).

        The same realisation as the training channel (the user's ``CHANNEL`` stream),
        evolved for ``time`` s at ``communication.speed`` (``tdl``/``cdl``; the other models
        are static); the estimate's error is drawn from ``rng(seed, TRACKING, k, slot)``.

        Parameters
        ----------
        time : float
            Seconds after training, ``>= 0``.
        slot : int
            The deployment slot (from 1), naming the estimate's draw.

        Returns
        -------
        LinkChannels
            ``train``: the true channel then; ``known``: the user's estimate of it;
            ``test``: the true channel again. ``Nr·u × Nt·u`` complex128 each.
        """
        key = (int(slot), float(time))
        if self._at is None or self._at[0] != key:
            channels = draw_link_channels(
                self._channel_config,
                self._csi,
                self.link.antennas_rx,
                self.link.antennas_tx,
                self.link.channel_uses,
                rng(self.seed, Stream.CHANNEL, self.index),
                rng(self.seed, Stream.TRACKING, self.index, key[0]),
                scale=self.conventions.channel_scale,
                time=key[1],
            )
            self._at = (key, LinkChannels(channels.train, channels.known, channels.train))
        return self._at[1]

    def receive(
        self, signal: np.ndarray, stream: Stream, channel: np.ndarray | None = None
    ) -> np.ndarray:
        """``𝓗 s + n``: the signal through this user's true channel (the test-time one for
        evaluation noise), noise from ``stream``.

        docs/ALGORITHM.md, §2 "Signal-processing blocks", *Noise and SNR*: ``w ~ CN(0, σ² I)``
        drawn from ``rng(seed, stream, index)``, a fresh generator each call (the same
        ``stream`` gives the same noise every time).

        Parameters
        ----------
        signal : ndarray, shape (Nt·u, N), complex128
            The transmitted symbols, one column per sample.
        stream : Stream
            ``Stream.EVAL_NOISE`` (through ``h_test``) or another stream, e.g.
            ``PILOT_NOISE`` (through ``h_block``).
        channel : ndarray, shape (Nr·u, Nt·u), complex128, optional
            Another channel to go through (a deployment slot's, :meth:`channels_at`).

        Returns
        -------
        ndarray, shape (Nr·u, N), complex128
            The received signal.
        """
        w = noise.complex_noise(
            (self.link.rx_dim, signal.shape[1]),
            self.noise_variance,
            rng(self.seed, stream, self.index),
        )
        h = self.h_test if stream == Stream.EVAL_NOISE else self.h_block
        return (h if channel is None else channel) @ signal + w

    def evaluate(self, message: protocol.Message) -> dict[str, float]:
        """Task accuracy, MSE to the clean latents, and clean accuracy (the upper bound).

        Decodes the transmission (:meth:`decode`), classifies it with the user's head and
        scores it per the conventions (docs/ALGORITHM.md, §3, *Transmission and evaluation*).

        Parameters
        ----------
        message : Message
            The test transmission, of kind ``TEST_KIND``.

        Returns
        -------
        dict of str to float
            ``accuracy`` and ``clean_accuracy`` (in [0, 1]), ``mse`` (per latent entry),
            ``n_test``, and ``assets`` (:func:`assets_metric`) when the data carry a
            fingerprint.

        Raises
        ------
        TypeError
            The message is not of kind ``TEST_KIND``.
        ValueError
            The decoded latents do not have one row per test label.
        RuntimeError
            Raised by :meth:`decode` when nothing was learned yet.
        """
        self._expect(message, self.TEST_KIND, self.REFIT_KIND, self.SLOT_KIND)
        decoded = self.decode(message)
        if decoded.shape[0] != self._labels.shape[0]:
            raise ValueError(
                f"user {self.index}: test transmission has {decoded.shape[0]} samples, "
                f"labels have {self._labels.shape[0]}"
            )
        predictions = self._predict(decoded.astype(np.float32))
        if self._clean_accuracy is None:  # the same in every evaluation (deployment slots)
            clean = self._predict(self._test.astype(np.float32))
            self._clean_accuracy = self.conventions.accuracy(clean, self._labels)
        return {
            "accuracy": self.conventions.accuracy(predictions, self._labels),
            "clean_accuracy": self._clean_accuracy,
            "mse": self.conventions.mse(decoded, self._test, self.link),
            "n_test": float(self._labels.shape[0]),
            **assets_metric(self.fingerprint),
        }

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
from common.maths.fading import PERFECT_CSI, RAYLEIGH, ChannelConfig, CsiConfig, draw_link_channels
from common.maths.link import LinkConfig
from common.maths.seeding import Stream, rng
from common.maths.whitening import Whitening, fit_whitening
from common.parties import protocol

Predict = Callable[[np.ndarray], np.ndarray]
"""Maps latents (N × d_k, float32) to class predictions (N,)."""


@dataclass(frozen=True)
class UserData:
    """A user's private inputs: pilot latents, test latents and labels, head."""

    name: str
    pilots: np.ndarray  # (n, d_k) clean latents of the semantic pilots
    test: np.ndarray  # (n_test, d_k) clean test latents
    test_labels: np.ndarray  # (n_test,)
    predict: Predict


@dataclass(frozen=True)
class PreparedData:
    """A user's inputs made ready for any run (:meth:`User.prepare`).

    Its arrays are only read, so one copy can serve every run over the same
    data and, memory-mapped, every process on a machine.
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


@dataclass(frozen=True)
class TrainReply:
    """What a user answers to a training downlink: the uplink message and its metrics."""

    message: protocol.Message
    metrics: dict[str, float]


class User(abc.ABC):
    """User ``k`` of the protocol, holding everything that never leaves it.

    Subclasses name the message kinds they train and test on and implement
    :meth:`train` and :meth:`decode`; what they learn travels between processes
    through :meth:`export_state`/:meth:`import_state` (Flower keeps it in the
    node's context).
    """

    TRAIN_KIND: ClassVar[str] = ""
    TEST_KIND: ClassVar[str] = ""

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
        self.whitening = data.whitening
        channels = draw_link_channels(
            channel_config, csi,
            link.antennas_rx, link.antennas_tx, link.channel_uses,
            rng(seed, Stream.CHANNEL, index), rng(seed, Stream.CSI, index),
            scale=conventions.channel_scale,
        )  # fmt: skip
        self.h_block = channels.train  # what the pilots really go through
        self.h_known = channels.known  # what the user knows of it (its estimate)
        self.h_test = channels.test  # what the test transmission goes through

    @classmethod
    def prepare(cls, index: int, data: UserData, conventions: Conventions) -> PreparedData:
        """Everything user ``index`` derives from its inputs alone, before any round.

        It depends on the data, the class and the conventions' covariance, not on
        the link, channel or seed of a run: every run (sweep cell) over the same
        data can use one, and the processes of a simulation share it.
        """
        pilots = validation.finite_matrix(f"user {index} ({data.name}) pilot latents", data.pilots)
        test = validation.finite_matrix(f"user {index} ({data.name}) test latents", data.test)
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
        )

    @classmethod
    def derive(cls, pilots: np.ndarray, whitening: Whitening) -> dict[str, np.ndarray]:
        """What a method family computes once from its pilots (``d_k × n``) besides."""
        return {}

    def _check_prepared(self, data: PreparedData) -> None:
        """Refuse prepared inputs made for another class's :meth:`derive` or covariance."""
        own = type(self).derive.__qualname__
        if data.derived_by != own:
            raise ValueError(f"user {self.index}: inputs prepared by {data.derived_by}, "
                             f"but {type(self).__name__} needs {own}")  # fmt: skip
        if data.unbiased_covariance != self.conventions.unbiased_covariance:
            raise ValueError(f"user {self.index}: inputs prepared with unbiased_covariance="
                             f"{data.unbiased_covariance}, but the run's conventions use "
                             f"{self.conventions.unbiased_covariance}")  # fmt: skip

    def pilot_metrics(self) -> dict[str, float]:
        """What every training reply says about this user's pilots: the whitening's loading,
        and how many distinct pilots it has against the whitened dimension."""
        return {
            "whitening_loading": self.whitening.loading,
            "distinct_pilots": float(self.distinct_pilots),
            "whitened_dim": float(self.whitening.chol.shape[0]),
        }

    @property
    def n_pilots(self) -> int:
        return self._pilots.shape[1]

    # ---- what a method family defines ---------------------------------------------------
    @abc.abstractmethod
    def train(self, message: protocol.Message) -> TrainReply:
        """Answer one training downlink with the message the algorithm lets leave the device."""

    @abc.abstractmethod
    def decode(self, message: protocol.Message) -> np.ndarray:
        """Turn a test transmission into latents in this user's space (n_test × d_k)."""

    @abc.abstractmethod
    def export_state(self) -> dict[str, np.ndarray]:
        """What the user learned so far, as named arrays."""

    @abc.abstractmethod
    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`export_state` returned (an empty dict: nothing learned yet)."""

    # ---- shared by every method -----------------------------------------------------------
    def _expect(self, message: protocol.Message, kind: str) -> None:
        if kind != message.KIND:
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

    def receive(self, signal: np.ndarray, stream: Stream) -> np.ndarray:
        """``𝓗 s + n``: the signal through this user's true channel (the test-time one for
        evaluation noise), noise from ``stream``."""
        w = noise.complex_noise(
            (self.link.rx_dim, signal.shape[1]),
            self.noise_variance,
            rng(self.seed, stream, self.index),
        )
        h = self.h_test if stream == Stream.EVAL_NOISE else self.h_block
        return h @ signal + w

    def evaluate(self, message: protocol.Message) -> dict[str, float]:
        """Task accuracy, MSE to the clean latents, and clean accuracy (the upper bound)."""
        self._expect(message, self.TEST_KIND)
        decoded = self.decode(message)
        if decoded.shape[0] != self._labels.shape[0]:
            raise ValueError(
                f"user {self.index}: test transmission has {decoded.shape[0]} samples, "
                f"labels have {self._labels.shape[0]}"
            )
        predictions = self._predict(decoded.astype(np.float32))
        clean = self._predict(self._test.astype(np.float32))
        return {
            "accuracy": self.conventions.accuracy(predictions, self._labels),
            "clean_accuracy": self.conventions.accuracy(clean, self._labels),
            "mse": self.conventions.mse(decoded, self._test, self.link),
            "n_test": float(self._labels.shape[0]),
        }

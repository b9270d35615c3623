"""A user: its private latents, whitening, channel, equalizer and classifier.

This object is the whole user side of the protocol. The in-process driver calls
it directly; the Flower client wraps it. It answers AP messages with the
messages the algorithm allows to leave the device, and evaluates test
transmissions through its own head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common import admm, channel, protocol, validation
from common.compression import compress, decompress
from common.link import LinkConfig
from common.seeding import Stream, rng
from common.whitening import Whitening, fit_whitening

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


def mmse_equalizer(effective: np.ndarray, sigma2: float) -> np.ndarray:
    """``Wᴴ = Hᴴ (H Hᴴ + σ² I)⁻¹`` for unit-covariance inputs (least squares if σ² = 0)."""
    gram = effective @ effective.conj().T
    if sigma2 > 0:
        gram = gram + sigma2 * np.eye(gram.shape[0])
    return effective.conj().T @ np.linalg.pinv(gram, hermitian=True)


def least_squares_map(inputs: np.ndarray, targets: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """Affine map ``W [x; 1] ≈ y`` fitted on columns (features × samples).

    A ridge of ``ridge · mean eigenvalue`` keeps zero-filled (rank-deficient)
    inputs solvable; it changes a well-posed fit negligibly.
    """
    ones = np.ones((1, inputs.shape[1]))
    phi = np.vstack([inputs, ones])
    gram = phi @ phi.T
    load = ridge * float(np.trace(gram)) / gram.shape[0]
    return np.linalg.solve(gram + load * np.eye(gram.shape[0]), phi @ targets.T).T


def apply_affine(w: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    return w[:, :-1] @ inputs + w[:, -1:]


def zero_fill(values: np.ndarray, indices: np.ndarray | None, dim: int) -> np.ndarray:
    """Place selected features (k × n) back into ``dim`` features, zeros elsewhere."""
    out = np.zeros((dim, values.shape[1]))
    if indices is None or indices.size == 0:
        out[: values.shape[0]] = values
    else:
        np.put_along_axis(out, indices.astype(np.int64), values, axis=0)
    return out


class User:
    """User ``k`` of the protocol, holding everything that never leaves it."""

    def __init__(self, index: int, data: UserData, link: LinkConfig, seed: int):
        self.index = int(index)
        self.name = data.name
        self.link = link
        self.seed = seed
        pilots = validation.finite_matrix(f"user {index} ({data.name}) pilot latents", data.pilots)
        self._test = validation.finite_matrix(f"user {index} ({data.name}) test latents", data.test)
        if pilots.shape[1] != self._test.shape[1]:
            raise ValueError(
                f"user {index} ({data.name}): pilot latents have {pilots.shape[1]} features "
                f"but test latents have {self._test.shape[1]}"
            )
        self._pilots = np.ascontiguousarray(pilots.T, dtype=np.float32)  # (d_k, n), kept small
        self._labels = np.asarray(data.test_labels)
        self._predict = data.predict
        self.dim = pilots.shape[1]
        compressed = compress(self._pilots)
        self.whitening: Whitening = fit_whitening(compressed)
        self._y_bar = self.whitening.whiten(compressed)
        self._y_energy = float(np.vdot(self._y_bar, self._y_bar).real)
        self.h = channel.rayleigh(
            link.antennas_rx, link.antennas_tx, rng(seed, Stream.CHANNEL, index)
        )
        self.h_block = channel.block_diagonal(self.h, link.channel_uses)
        self.g: np.ndarray | None = None
        self._feature_map: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None

    @property
    def n_pilots(self) -> int:
        return self._pilots.shape[1]

    # ---- state that must outlive a process (Flower keeps it in the node's context) ------
    def export_state(self) -> dict[str, np.ndarray]:
        """What the user learned so far: its equalizer and/or its feature map."""
        state: dict[str, np.ndarray] = {}
        if self.g is not None:
            state["g"] = self.g
        if self._feature_map is not None:
            w, mean, chol, dim = self._feature_map
            state |= {"map_w": w, "map_mean": mean, "map_chol": chol, "map_dim": np.array([dim])}
        return state

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        self.g = state.get("g")
        if "map_w" in state:
            self._feature_map = (
                state["map_w"], state["map_mean"], state["map_chol"], int(state["map_dim"][0])
            )
        else:
            self._feature_map = None

    # ---- training -------------------------------------------------------------------------
    def train(self, message: protocol.Message) -> tuple[protocol.Message, dict[str, float]]:
        """Answer one training downlink; returns the reply and scalar metrics."""
        if isinstance(message, protocol.AlignPilots):
            return self._align(message)
        if isinstance(message, protocol.FeaturePilots):
            return self._fit_feature_map(message)
        raise TypeError(f"user {self.index} cannot train on a {message.KIND!r} message")

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

    def _align(self, message: protocol.AlignPilots) -> tuple[protocol.Message, dict[str, float]]:
        self._check_pilot_count(message.signal)
        received = self.h_block @ message.signal
        noise_energy = self.n_pilots * self.link.noise_variance
        moments = admm.ReceivedMoments.of(self._y_bar, received)
        self.g = admm.equalizer(moments, noise_energy)
        a_gram, a_y = admm.uplink_statistics(self.g, self.h_block, self._y_bar)
        objective, fit = admm.local_objective(self._y_energy, moments, self.g, noise_energy)
        metrics = {
            "objective": objective,
            "pilot_mse": fit / self._y_bar.size,
            "whitening_loading": self.whitening.loading,
        }
        return protocol.AlignUplink(a_gram=a_gram, a_y=a_y), metrics

    def _receive(self, signal: np.ndarray, stream: Stream) -> np.ndarray:
        noise = channel.complex_noise(
            (self.link.rx_dim, signal.shape[1]),
            self.link.noise_variance,
            rng(self.seed, stream, self.index),
        )
        return self.h_block @ signal + noise

    def _decode_features(self, signal, mean, chol, indices, feature_dim) -> np.ndarray:
        """Equalize, de-whiten, decompress and zero-fill a First-K/Top-K transmission."""
        scale = np.sqrt(self.link.power / self.link.tx_dim)
        equalizer = mmse_equalizer(scale * self.h_block, self.link.noise_variance)
        symbols = (equalizer @ signal)[: chol.shape[0]]  # drop zero-padding symbols, if any
        values = decompress(chol @ symbols + mean, 2 * chol.shape[0])
        k = indices.shape[0] if indices.size else min(2 * self.link.tx_dim, feature_dim)
        return zero_fill(values[:k], indices if indices.size else None, feature_dim)

    def _fit_feature_map(self, message: protocol.FeaturePilots):
        self._check_pilot_count(message.signal)
        received = self._receive(message.signal, Stream.PILOT_NOISE)
        dim = int(message.feature_dim[0])
        features = self._decode_features(received, message.mean, message.chol, message.indices, dim)
        w = least_squares_map(features, self._pilots)
        self._feature_map = (w, message.mean, message.chol, dim)
        pilot_mse = float(np.mean((apply_affine(w, features) - self._pilots) ** 2))
        return protocol.Ack(), {"pilot_mse": pilot_mse, "whitening_loading": self.whitening.loading}

    # ---- evaluation -----------------------------------------------------------------------
    def decode(self, message: protocol.Message) -> np.ndarray:
        """Turn a test transmission into latents in this user's space (n_test × d_k)."""
        if isinstance(message, protocol.AlignTest):
            if self.g is None:
                raise RuntimeError(f"user {self.index} has no equalizer yet: train first")
            received = self._receive(message.signal, Stream.EVAL_NOISE)
            y_hat = self.whitening.dewhiten(self.g @ received)
            return decompress(y_hat, self.dim).T
        if isinstance(message, protocol.FeatureTest):
            if self._feature_map is None:
                raise RuntimeError(f"user {self.index} has no feature map yet: train first")
            w, mean, chol, dim = self._feature_map
            received = self._receive(message.signal, Stream.EVAL_NOISE)
            features = self._decode_features(received, mean, chol, message.indices, dim)
            return apply_affine(w, features).T
        raise TypeError(f"user {self.index} cannot evaluate a {message.KIND!r} message")

    def evaluate(self, message: protocol.Message) -> dict[str, float]:
        """Task accuracy, MSE to the clean latents, and clean accuracy (the upper bound)."""
        decoded = self.decode(message)
        if decoded.shape[0] != self._labels.shape[0]:
            raise ValueError(
                f"user {self.index}: test transmission has {decoded.shape[0]} samples, "
                f"labels have {self._labels.shape[0]}"
            )
        predictions = self._predict(decoded.astype(np.float32))
        clean = self._predict(self._test.astype(np.float32))
        return {
            "accuracy": float(np.mean(predictions == self._labels)),
            "clean_accuracy": float(np.mean(clean == self._labels)),
            "mse": float(np.mean((decoded - self._test) ** 2)),
            "n_test": float(self._labels.shape[0]),
        }

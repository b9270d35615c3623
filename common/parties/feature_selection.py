"""The feature-selection baselines: First-K, Top-K and Eigen-K.

The AP sends ``2·Nt·u`` latent features per sample (at most ``d``): the first
ones, the largest ones, or the projections on the leading principal directions,
complex-compressed, whitened on the pilots, zero-padded to ``Nt·u`` symbols if
needed and sent through the power-normalised precoder ``√(P/(Nt·u)) I``. One
exchange: each :class:`FeatureMapUser` equalizes what it receives, undoes the
AP's whitening and fits its least-squares map into its own latent space.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np

from common.maths.compression import compress, decompress
from common.maths.seeding import Stream
from common.maths.whitening import fit_whitening
from common.parties import protocol
from common.parties.access_point import AccessPoint
from common.parties.user import TrainReply, User
from common.registry import METHODS


def mmse_equalizer(effective: np.ndarray, sigma2: float) -> np.ndarray:
    """``Wᴴ = Hᴴ (H Hᴴ + σ² I)⁻¹`` for unit-covariance inputs (least squares if σ² = 0).

    The inverse is a pseudo-inverse (``numpy.linalg.pinv``), so a singular ``H Hᴴ``
    (σ² = 0, more receive than transmit dimensions) gives the minimum-norm solution.
    docs/ALGORITHM.md, §4 "Multi-link, clustered and the baselines" (written there as ``W``).

    Parameters
    ----------
    effective : ndarray, shape (Nr·u, Nt·u), complex128
        The effective channel ``H`` (the known block channel times the precoder's
        amplitude ``√(P/(Nt·u))``).
    sigma2 : float
        The noise variance σ² (linear); 0: no noise.

    Returns
    -------
    ndarray, shape (Nt·u, Nr·u), complex128
        ``Wᴴ``, applied on the left of the received signal.
    """
    gram = effective @ effective.conj().T
    if sigma2 > 0:
        gram = gram + sigma2 * np.eye(gram.shape[0])
    return effective.conj().T @ np.linalg.pinv(gram, hermitian=True)


def least_squares_map(inputs: np.ndarray, targets: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """Affine map ``W [x; 1] ≈ y`` fitted on columns (features × samples).

    A ridge of ``ridge · mean eigenvalue`` keeps zero-filled (rank-deficient)
    inputs solvable; it changes a well-posed fit negligibly. docs/ALGORITHM.md, §4
    "Multi-link, clustered and the baselines" (the user's map ``ŷ = M [x̂; 1]``).

    Parameters
    ----------
    inputs : ndarray, shape (d, n), float
        The inputs ``x``, one column per sample.
    targets : ndarray, shape (d_k, n), float
        The targets ``y``, one column per sample.
    ridge : float, optional
        The ridge relative to the mean eigenvalue of ``[x; 1][x; 1]ᵀ``. Default 1e-8.

    Returns
    -------
    ndarray, shape (d_k, d + 1), float64
        ``W``: the linear part in the first ``d`` columns, the offset in the last.

    Raises
    ------
    numpy.linalg.LinAlgError
        The loaded Gram matrix is singular (only possible with ``ridge = 0``).
    """
    # Features that are zero in every sample (zero-filled: First-K and Eigen-K send k of d)
    # are left out of the solve: their block of the loaded Gram matrix is load·I and their
    # right-hand side is 0, so their weights are exactly 0; the ridge is the full [x; 1]'s
    # (they add nothing to the trace). A d×d solve becomes k×k (d = 192, k = 8..32 here).
    active = np.flatnonzero(np.any(inputs != 0, axis=1))
    phi = np.vstack([inputs[active], np.ones((1, inputs.shape[1]))])
    gram = phi @ phi.T
    load = ridge * float(np.trace(gram)) / (inputs.shape[0] + 1)
    solved = np.linalg.solve(gram + load * np.eye(gram.shape[0]), phi @ targets.T).T
    w = np.zeros((targets.shape[0], inputs.shape[0] + 1))
    w[:, active], w[:, -1] = solved[:, :-1], solved[:, -1]
    return w


def apply_affine(w: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """``W [x; 1]``: apply the map of :func:`least_squares_map`.

    Parameters
    ----------
    w : ndarray, shape (d_k, d + 1), float
        The affine map.
    inputs : ndarray, shape (d, N), float
        Inputs, one column per sample.

    Returns
    -------
    ndarray, shape (d_k, N), float64
        The mapped columns.
    """
    active = np.flatnonzero(np.any(w[:, :-1] != 0, axis=0))  # the features the map reads
    return w[:, active] @ inputs[active] + w[:, -1:]


def zero_fill(values: np.ndarray, indices: np.ndarray | None, dim: int) -> np.ndarray:
    """Place selected features (k × n) back into ``dim`` features, zeros elsewhere.

    Parameters
    ----------
    values : ndarray, shape (k, n), float
        The selected values, one column per sample.
    indices : ndarray, shape (k, n), int (uint16 on the wire), or None
        Each value's feature position (Top-K); ``None`` or empty: the first ``k``
        positions (First-K, Eigen-K).
    dim : int
        The full feature count ``d`` (``>= k``).

    Returns
    -------
    ndarray, shape (dim, n), float64
        The values at their positions, zeros elsewhere.
    """
    out = np.zeros((dim, values.shape[1]))
    if indices is None or indices.size == 0:
        out[: values.shape[0]] = values
    else:
        np.put_along_axis(out, indices.astype(np.int64), values, axis=0)
    return out


@dataclass(frozen=True)
class FeatureMap:
    """What a baseline user learns: its affine map and the AP's whitening side information.

    Attributes
    ----------
    w : ndarray, shape (d_k, d + 1), float64
        The affine map from the AP's zero-filled features to the user's latents.
    mean : ndarray, shape (⌈k/2⌉, 1), complex128
        The AP's whitening mean ``μ_s``.
    chol : ndarray, shape (⌈k/2⌉, ⌈k/2⌉), complex128
        The AP's whitening factor ``L_s``.
    feature_dim : int
        The AP's latent size ``d``.
    """

    w: np.ndarray
    mean: np.ndarray
    chol: np.ndarray
    feature_dim: int

    def arrays(self) -> dict[str, np.ndarray]:
        """The map as named arrays (a user's exported state).

        Returns
        -------
        dict of str to ndarray
            ``map_w``, ``map_mean``, ``map_chol`` and ``map_dim`` (shape (1,), int).
        """
        return {
            "map_w": self.w,
            "map_mean": self.mean,
            "map_chol": self.chol,
            "map_dim": np.array([self.feature_dim]),
        }

    @classmethod
    def from_arrays(cls, state: dict[str, np.ndarray]) -> FeatureMap:
        """The map :meth:`arrays` named.

        Parameters
        ----------
        state : dict of str to ndarray
            Holds ``map_w``, ``map_mean``, ``map_chol`` and ``map_dim``.

        Returns
        -------
        FeatureMap

        Raises
        ------
        KeyError
            One of the four names is missing.
        """
        return cls(state["map_w"], state["map_mean"], state["map_chol"], int(state["map_dim"][0]))


class FeatureMapUser(User):
    """Fits a least-squares map from the AP's received features to its own latents.

    Trains on :class:`~common.parties.protocol.FeaturePilots`, answers with an
    :class:`~common.parties.protocol.Ack` and decodes
    :class:`~common.parties.protocol.FeatureTest` (docs/ALGORITHM.md, §4).

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~common.parties.user.User`.

    Attributes
    ----------
    feature_map : FeatureMap or None
        What it learned (``None`` before training).
    """

    TRAIN_KIND = protocol.FeaturePilots.KIND
    TEST_KIND = protocol.FeatureTest.KIND

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_map: FeatureMap | None = None

    def export_state(self) -> dict[str, np.ndarray]:
        """The map learned so far.

        Returns
        -------
        dict of str to ndarray
            :meth:`FeatureMap.arrays`, or empty before training.
        """
        return {} if self.feature_map is None else self.feature_map.arrays()

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Take back what :meth:`export_state` returned.

        Parameters
        ----------
        state : dict of str to ndarray
            :meth:`FeatureMap.arrays`, or empty (nothing learned; any dict without
            ``map_w`` reads as empty).
        """
        self.feature_map = FeatureMap.from_arrays(state) if "map_w" in state else None

    def decode_features(self, signal, mean, chol, indices, feature_dim) -> np.ndarray:
        """Equalize, de-whiten, decompress and zero-fill a First-K/Top-K transmission.

        docs/ALGORITHM.md, §4: the MMSE equalizer of the known channel scaled by
        ``√(P/(Nt·u))`` (:func:`mmse_equalizer`), the padding symbols dropped, then
        ``c⁻¹(L_s ŝ + μ_s)`` and :func:`zero_fill`.

        Parameters
        ----------
        signal : ndarray, shape (Nr·u, N), complex128
            The received signal, one column per sample.
        mean : ndarray, shape (⌈k/2⌉, 1), complex128
            The AP's whitening mean ``μ_s``.
        chol : ndarray, shape (⌈k/2⌉, ⌈k/2⌉), complex128
            The AP's whitening factor ``L_s``.
        indices : ndarray, shape (k, N) or (0, 0), uint16
            Top-K's positions, or empty.
        feature_dim : int
            The AP's latent size ``d``.

        Returns
        -------
        ndarray, shape (feature_dim, N), float64
            The AP's features as the user sees them, zeros where nothing was sent.
        """
        scale = np.sqrt(self.link.power / self.link.tx_dim)
        equalizer = mmse_equalizer(scale * self.h_known, self.noise_variance)
        symbols = (equalizer @ signal)[: chol.shape[0]]  # drop zero-padding symbols, if any
        values = decompress(chol @ symbols + mean, 2 * chol.shape[0])
        k = indices.shape[0] if indices.size else min(2 * self.link.tx_dim, feature_dim)
        return zero_fill(values[:k], indices if indices.size else None, feature_dim)

    def train(self, message: protocol.Message) -> TrainReply:
        """Receive the pilots with noise, decode their features and fit the map.

        Parameters
        ----------
        message : Message
            A :class:`~common.parties.protocol.FeaturePilots` (signal Nt·u × n).

        Returns
        -------
        TrainReply
            An :class:`~common.parties.protocol.Ack` and the metrics ``pilot_mse`` (the
            map's MSE per entry on the pilots) and
            :meth:`~common.parties.user.User.pilot_metrics`.

        Raises
        ------
        TypeError
            The message is not ``feature_pilots``.
        ValueError
            The signal does not hold ``n`` pilots of ``Nt·u`` symbols.
        """
        self._expect(message, self.TRAIN_KIND)
        self._check_pilot_count(message.signal)
        received = self.receive(message.signal, Stream.PILOT_NOISE)
        dim = int(message.feature_dim[0])
        features = self.decode_features(received, message.mean, message.chol, message.indices, dim)
        w = least_squares_map(features, self._pilots)
        self.feature_map = FeatureMap(w, message.mean, message.chol, dim)
        pilot_mse = float(np.mean((apply_affine(w, features) - self._pilots) ** 2))
        metrics = {"pilot_mse": pilot_mse, **self.pilot_metrics()}
        return TrainReply(protocol.Ack(), metrics)

    def decode(self, message: protocol.Message) -> np.ndarray:
        """The learned map applied to the decoded features of the test transmission.

        Parameters
        ----------
        message : Message
            A :class:`~common.parties.protocol.FeatureTest` (signal Nt·u × n_test).

        Returns
        -------
        ndarray, shape (n_test, d_k), float64
            The decoded latents, one row per test sample.

        Raises
        ------
        RuntimeError
            No map yet (the user never trained).
        """
        fm = self.feature_map
        if fm is None:
            raise RuntimeError(f"user {self.index} has no feature map yet: train first")
        received = self.receive(message.signal, Stream.EVAL_NOISE)
        features = self.decode_features(received, fm.mean, fm.chol, message.indices, fm.feature_dim)
        return apply_affine(fm.w, features).T


class _FeatureAccessPoint(AccessPoint):
    """Sends selected raw features; learns nothing (one round)."""

    user_class = FeatureMapUser
    sends_indices = False
    uses_rho = False
    uses_aggregator = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.k = min(2 * self.link.tx_dim, self.dim)
        values, _ = self._select(self._pilots)
        self.whitening = fit_whitening(compress(values))

    @classmethod
    def rounds_for(cls, rounds: int) -> int:
        return 1  # one transmission of the selected features, whatever ``rounds`` says

    @abc.abstractmethod
    def _select(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Selected values (k × n, in index order) and their indices (k × n, uint16)."""

    def _signal(self, values: np.ndarray) -> np.ndarray:
        symbols = self.whitening.whiten(compress(values))
        pad = self.link.tx_dim - symbols.shape[0]
        if pad:
            symbols = np.vstack([symbols, np.zeros((pad, symbols.shape[1]))])
        return math.sqrt(self.link.power / self.link.tx_dim) * symbols

    def _basis(self) -> np.ndarray:
        """Side information sent once with the pilots (Eigen-K's directions); none here."""
        return np.zeros((0, 0), dtype=protocol.REAL)

    def _side_indices(self, indices: np.ndarray) -> np.ndarray:
        return indices if self.sends_indices else np.zeros((0, 0), dtype=protocol.INDEX)

    def train_messages(self, users):
        """The same :class:`~common.parties.protocol.FeaturePilots` for every listed user.

        Parameters
        ----------
        users : sequence of int
            The participants.

        Returns
        -------
        dict of int to FeaturePilots
            One shared message object.
        """
        values, indices = self._select(self._pilots)
        message = protocol.FeaturePilots(
            signal=self._signal(values),
            mean=self.whitening.mean,
            chol=self.whitening.chol,
            indices=self._side_indices(indices),
            feature_dim=np.array([self.dim], dtype=protocol.INT),
            basis=self._basis(),
        )
        return {k: message for k in users}

    def update(self, replies, weights=None):
        """Nothing to learn; the round's metrics.

        Parameters
        ----------
        replies : Mapping of int to Ack
            Ignored.
        weights : Mapping of int to float, optional
            Ignored.

        Returns
        -------
        dict of str to float
            ``primal_residual`` 0 and ``power`` ``P·⌈k/2⌉/(Nt·u)`` (linear, ≤ P).
        """
        return {"primal_residual": 0.0, "power": self.link.power * min(1.0, self._fill)}

    @property
    def _fill(self) -> float:
        return math.ceil(self.k / 2) / self.link.tx_dim

    def test_messages(self, users):
        """The same :class:`~common.parties.protocol.FeatureTest` for every listed user.

        Parameters
        ----------
        users : sequence of int
            The users to evaluate.

        Returns
        -------
        dict of int to FeatureTest
            One shared message object.
        """
        values, indices = self._select(self._test)
        message = protocol.FeatureTest(
            signal=self._signal(values), indices=self._side_indices(indices)
        )
        return {k: message for k in users}


@METHODS.register("first_k")
class FirstKAccessPoint(_FeatureAccessPoint):
    """The first ``2·Nt·u`` features of every sample."""

    method = "first_k"

    def _select(self, x):
        idx = np.broadcast_to(np.arange(self.k)[:, None], (self.k, x.shape[1]))
        return x[: self.k], idx.astype(protocol.INDEX)


@METHODS.register("top_k")
class TopKAccessPoint(_FeatureAccessPoint):
    """The ``2·Nt·u`` largest-magnitude features of every sample; indices sent as side info."""

    method = "top_k"
    sends_indices = True

    def side_channel_uses(self) -> int:
        """The paper code's charge for the indices: as many uses as the values, ``u``.

        Returns
        -------
        int
            ``u`` channel uses per sample.
        """
        return self.link.channel_uses

    def _select(self, x):
        top = np.argpartition(-np.abs(x), self.k - 1, axis=0)[: self.k]
        top.sort(axis=0)
        return np.take_along_axis(x, top, axis=0), top.astype(protocol.INDEX)


@METHODS.register("eigen_k")
class EigenKAccessPoint(_FeatureAccessPoint):
    """Projections of every sample on the ``2·Nt·u`` leading principal directions of the AP's
    pilot latents.

    The directions and the pilot mean travel once with the pilots (counted in the
    overhead), so a user could map the projections back into the AP's latent space;
    its least-squares map absorbs that invertible change of coordinates, so it fits
    on the projections directly, as First-K does on raw features.
    """

    method = "eigen_k"

    def _principal(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_directions"):
            center = self._pilots.mean(axis=1, keepdims=True)
            covariance = np.cov(self._pilots - center)
            _, vectors = np.linalg.eigh(np.atleast_2d(covariance))
            leading = vectors[:, ::-1][:, : self.k]
            # a fixed sign per direction (largest entry positive): the same basis everywhere
            signs = np.sign(leading[np.abs(leading).argmax(axis=0), np.arange(leading.shape[1])])
            self._directions, self._center = leading * signs, center
        return self._directions, self._center

    def _basis(self) -> np.ndarray:
        directions, center = self._principal()
        return np.hstack([directions, center]).astype(protocol.REAL)

    def _select(self, x):
        directions, center = self._principal()
        idx = np.broadcast_to(np.arange(self.k)[:, None], (self.k, x.shape[1]))
        return directions.T @ (x - center), idx.astype(protocol.INDEX)

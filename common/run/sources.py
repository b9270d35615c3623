"""Where the AP's and each user's inputs come from.

A source is small and picklable: Flower ships it to every ClientApp, and each
party rebuilds only its own inputs from it (a user never sees another party's
latents). :class:`~common.assets.source.AssetSource` reads the zoo's cached
latents and heads; :class:`SyntheticSource` generates paper-scale latents for
benchmarks and tests.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass

import numpy as np

from common.parties.user import UserData


def fingerprint(*parts: str) -> str:
    """A short checksum (12 hex digits of a SHA-256) of some texts (checksums, names).

    A run's parties fingerprint their assets with it (:attr:`APInputs.fingerprint`,
    :attr:`~common.parties.user.UserData.fingerprint`), and the results table names the
    whole zoo by the fingerprint of those (``zoo``): two runs on the same zoo, bit for bit,
    show the same one. ``''`` (unknown) when any part is unknown (``''``).
    """
    if not parts or "" in parts:
        return ""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class APInputs:
    """The AP's own inputs: its encoder's latents of the pilots and of the test split.

    Attributes
    ----------
    dataset : str
        The dataset's name.
    model : str
        The AP encoder's name.
    pilots : ndarray, shape (n, d), float
        Latents of the semantic pilots, one row per pilot (float32 from the zoo).
    test : ndarray, shape (n_test, d), float
        Latents of the test split, one row per sample.
    fingerprint : str
        A short checksum (12 hex digits) of the AP's latents; empty when unknown.
    """

    dataset: str
    model: str
    pilots: np.ndarray  # (n, d)
    test: np.ndarray  # (n_test, d)
    fingerprint: str = ""


@dataclass(frozen=True)
class AlignmentProblem:
    """The numbers one experiment runs on: the AP's inputs and each user's private data.

    Attributes
    ----------
    ap : APInputs
        The AP's inputs.
    users : tuple of UserData
        Each user's inputs, by index.

    Raises
    ------
    ValueError
        There is no user, or a user's pilot count differs from the AP's.
    """

    ap: APInputs
    users: tuple[UserData, ...]

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("an alignment problem needs at least one user")
        n = self.ap.pilots.shape[0]
        for k, user in enumerate(self.users):
            if user.pilots.shape[0] != n:
                raise ValueError(
                    f"mismatched pilot counts: the AP has {n} pilots, user {k} ({user.name}) "
                    f"has {user.pilots.shape[0]}"
                )

    @property
    def n_pilots(self) -> int:
        """The number of pilots ``n``."""
        return self.ap.pilots.shape[0]


class ProblemSource(abc.ABC):
    """Builds the AP's inputs and any one user's private inputs.

    A source is small and picklable (Flower ships it to every ClientApp), and each
    party calls only its own builder, so a user never loads another party's latents.
    A subclass implements :attr:`num_users`, :meth:`ap_inputs` and :meth:`user_data`,
    and optionally :meth:`user_key`, so that the processes of a simulation share one
    prepared copy of each user's inputs. The AP and every user must describe the same
    ``n`` pilot samples in the same order (row ``i`` is the same sample everywhere).
    """

    @property
    @abc.abstractmethod
    def num_users(self) -> int:
        """The number of users ``K`` the source provides inputs for."""
        ...

    @abc.abstractmethod
    def ap_inputs(self) -> APInputs:
        """The AP's latents of the pilots and of the test split.

        Returns
        -------
        APInputs
            ``pilots`` (n × d) and ``test`` (n_test × d), one row per sample.
        """
        ...

    @abc.abstractmethod
    def user_data(self, index: int) -> UserData:
        """User ``index``'s private inputs.

        Parameters
        ----------
        index : int
            The user, in ``0..num_users-1``.

        Returns
        -------
        UserData
            Its pilot latents (n × d_k, the AP's pilot samples in the AP's order), test
            latents (n_test × d_k), test labels (n_test,) and classifier.
        """
        ...

    def user_key(self, index: int) -> str | None:
        """A text that names user ``index``'s inputs exactly: equal keys, equal data.

        The processes of a simulation share one prepared copy of each user's
        inputs under it. ``None`` (the default, for a source that cannot say):
        every process keeps its own copy.

        Parameters
        ----------
        index : int
            The user, in ``0..num_users-1``.

        Returns
        -------
        str or None
            The key, or ``None`` (not shared).
        """
        return None

    def problem(self) -> AlignmentProblem:
        """Everything at once, for the in-process driver.

        Users whose data the source names alike (:meth:`user_key`: e.g. the users of one
        model) get the same :class:`UserData` object, loaded once.

        Returns
        -------
        AlignmentProblem
            The AP's inputs and every user's, users ``0..num_users-1`` in order.

        Raises
        ------
        ValueError
            No user, or a user's pilot count differs from the AP's.
        """
        loaded: dict[str, UserData] = {}
        users = []
        for k in range(self.num_users):
            key = self.user_key(k)
            if key is None:
                users.append(self.user_data(k))
            else:
                if key not in loaded:
                    loaded[key] = self.user_data(k)
                users.append(loaded[key])
        return AlignmentProblem(self.ap_inputs(), tuple(users))


class NearestCentroid:
    """Classifies latents by their nearest class centroid (a picklable predictor).

    Parameters
    ----------
    centroids : ndarray, shape (classes, d), float
        One centroid per class, in the latent space it classifies.

    Attributes
    ----------
    centroids : ndarray, shape (classes, d), float
        As given.
    norms : ndarray, shape (classes,), float
        Their squared norms.
    """

    def __init__(self, centroids: np.ndarray):
        self.centroids = centroids
        self.norms = (centroids**2).sum(1)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """The index of each latent's nearest centroid (Euclidean).

        Parameters
        ----------
        z : ndarray, shape (N, d), float
            Latents, one row per sample.

        Returns
        -------
        ndarray, shape (N,), int64
            Predicted class labels.
        """
        return np.argmin(self.norms[None] - 2 * z @ self.centroids.T, axis=1)


@dataclass(frozen=True)
class SyntheticSource(ProblemSource):
    """Latents of the same samples in different spaces, with a known class structure.

    Every party's latents are a random linear image of shared low-dimensional
    semantic factors (class centroid plus within-class variation) plus private
    noise, so alignment is possible but not exact. Users classify by nearest
    class centroid in their own space.

    The shared factors are ``z = c_y + e`` (``c_y ~ separation · N(0, I)`` the class
    centroid, ``e ~ N(0, I)``, ``factors`` dimensions); party ``p`` (0 the AP, ``k + 1``
    user k) sees ``z M_p + noise · N(0, I)`` with ``M_p ~ N(0, 1/factors)``. The first
    ``n`` samples are the pilots, the next ``n_test`` the test split. Everything is a
    function of the fields: equal sources give equal data in any process.

    Attributes
    ----------
    n : int
        Pilots (shared samples).
    n_test : int
        Test samples.
    ap_dim : int
        The AP's latent size ``d``.
    user_dims : tuple of int
        Each user's latent size ``d_k``; its length is the number of users.
    classes : int
        Number of classes.
    factors : int
        Dimension of the shared semantic factors.
    noise : float
        Standard deviation of each party's private noise.
    separation : float
        Scale of the class centroids.
    seed : int
        Seeds every draw.
    """

    n: int = 600
    n_test: int = 300
    ap_dim: int = 24
    user_dims: tuple[int, ...] = (30, 17)
    classes: int = 5
    factors: int = 16
    noise: float = 0.3
    separation: float = 2.0
    seed: int = 0

    @property
    def num_users(self) -> int:
        """The number of users, ``len(user_dims)``."""
        return len(self.user_dims)

    def _shared(self):
        rng = np.random.default_rng([self.seed, 0])
        centroids = self.separation * rng.standard_normal((self.classes, self.factors))
        labels = rng.integers(0, self.classes, self.n + self.n_test)
        z = centroids[labels] + rng.standard_normal((self.n + self.n_test, self.factors))
        return centroids, labels, z

    def _party(self, party: int, dim: int):
        centroids, labels, z = self._shared()
        rng = np.random.default_rng([self.seed, 1, party])
        mixing = rng.standard_normal((self.factors, dim)) / np.sqrt(self.factors)
        latents = z @ mixing + self.noise * rng.standard_normal((z.shape[0], dim))
        return latents, labels, centroids @ mixing

    def ap_inputs(self) -> APInputs:
        """The AP's synthetic latents (party 0).

        Returns
        -------
        APInputs
            Dataset ``"synthetic"``, model ``"synthetic<ap_dim>"``, pilots (n × ap_dim)
            and test latents (n_test × ap_dim), float64.
        """
        x, _, _ = self._party(0, self.ap_dim)
        return APInputs(
            "synthetic",
            f"synthetic{self.ap_dim}",
            x[: self.n],
            x[self.n :],
            fingerprint=fingerprint(repr(self), "AP"),
        )

    def user_key(self, index: int) -> str:
        """The source's repr (every field) and the user's index.

        Parameters
        ----------
        index : int
            The user.

        Returns
        -------
        str
        """
        return f"{self!r} user {index}"  # every field, exactly: the data are a function of them

    def user_data(self, index: int) -> UserData:
        """User ``index``'s synthetic latents (party ``index + 1``) and classifier.

        Parameters
        ----------
        index : int
            The user, in ``0..num_users-1``.

        Returns
        -------
        UserData
            Name ``"synthetic<d_k>"``, pilots (n × d_k) and test latents (n_test × d_k),
            float64, the test labels (n_test,) and a :class:`NearestCentroid` on the
            class centroids mapped into its space.

        Raises
        ------
        IndexError
            ``index`` is not a user of the source.
        """
        dim = self.user_dims[index]
        y, labels, centroids = self._party(index + 1, dim)
        return UserData(
            f"synthetic{dim}",
            y[: self.n],
            y[self.n :],
            labels[self.n :],
            NearestCentroid(centroids),
            fingerprint=fingerprint(repr(self), f"user {index}"),
        )

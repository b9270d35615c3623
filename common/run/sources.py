"""Where the AP's and each user's inputs come from.

A source is small and picklable: Flower ships it to every ClientApp, and each
party rebuilds only its own inputs from it (a user never sees another party's
latents). :class:`~common.assets.source.AssetSource` reads the zoo's cached
latents and heads; :class:`SyntheticSource` generates paper-scale latents for
benchmarks and tests.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from common.parties.user import UserData


@dataclass(frozen=True)
class APInputs:
    """The AP's own inputs: its encoder's latents of the pilots and of the test split."""

    dataset: str
    model: str
    pilots: np.ndarray  # (n, d)
    test: np.ndarray  # (n_test, d)


@dataclass(frozen=True)
class AlignmentProblem:
    """The numbers one experiment runs on: the AP's inputs and each user's private data."""

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
        return self.ap.pilots.shape[0]


class ProblemSource(abc.ABC):
    """Builds the AP's inputs and any one user's private inputs."""

    @property
    @abc.abstractmethod
    def num_users(self) -> int: ...

    @abc.abstractmethod
    def ap_inputs(self) -> APInputs: ...

    @abc.abstractmethod
    def user_data(self, index: int) -> UserData: ...

    def user_key(self, index: int) -> str | None:
        """A text that names user ``index``'s inputs exactly: equal keys, equal data.

        The processes of a simulation share one prepared copy of each user's
        inputs under it. ``None`` (the default, for a source that cannot say):
        every process keeps its own copy.
        """
        return None

    def problem(self) -> AlignmentProblem:
        """Everything at once, for the in-process driver."""
        users = tuple(self.user_data(k) for k in range(self.num_users))
        return AlignmentProblem(self.ap_inputs(), users)


class NearestCentroid:
    """Classifies latents by their nearest class centroid (a picklable predictor)."""

    def __init__(self, centroids: np.ndarray):
        self.centroids = centroids
        self.norms = (centroids**2).sum(1)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return np.argmin(self.norms[None] - 2 * z @ self.centroids.T, axis=1)


@dataclass(frozen=True)
class SyntheticSource(ProblemSource):
    """Latents of the same samples in different spaces, with a known class structure.

    Every party's latents are a random linear image of shared low-dimensional
    semantic factors (class centroid plus within-class variation) plus private
    noise, so alignment is possible but not exact. Users classify by nearest
    class centroid in their own space.
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
        x, _, _ = self._party(0, self.ap_dim)
        return APInputs("synthetic", f"synthetic{self.ap_dim}", x[: self.n], x[self.n :])

    def user_key(self, index: int) -> str:
        return f"{self!r} user {index}"  # every field, exactly: the data are a function of them

    def user_data(self, index: int) -> UserData:
        dim = self.user_dims[index]
        y, labels, centroids = self._party(index + 1, dim)
        return UserData(
            f"synthetic{dim}",
            y[: self.n],
            y[self.n :],
            labels[self.n :],
            NearestCentroid(centroids),
        )

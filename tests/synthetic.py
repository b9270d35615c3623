"""Synthetic alignment problems: users whose latents are noisy linear maps of the AP's."""

from __future__ import annotations

import numpy as np

from common.experiment import AlignmentProblem
from common.user import UserData


def nearest_centroid(centroids: np.ndarray):
    def predict(z: np.ndarray) -> np.ndarray:
        d2 = (z**2).sum(1)[:, None] - 2 * z @ centroids.T + (centroids**2).sum(1)[None]
        return np.argmin(d2, axis=1)

    return predict


def make_problem(
    *,
    n: int = 600,
    n_test: int = 300,
    d: int = 24,
    user_dims: tuple[int, ...] = (30, 17),
    classes: int = 5,
    noise: float = 0.3,
    separation: float = 2.0,
    seed: int = 0,
) -> AlignmentProblem:
    rng = np.random.default_rng(seed)
    centroids = separation * rng.standard_normal((classes, d))
    labels = rng.integers(0, classes, n + n_test)
    x = centroids[labels] + rng.standard_normal((n + n_test, d))
    users = []
    for k, dk in enumerate(user_dims):
        w = rng.standard_normal((d, dk)) / np.sqrt(d)
        y = x @ w + noise * rng.standard_normal((n + n_test, dk))
        users.append(
            UserData(f"user{k}", y[:n], y[n:], labels[n:], nearest_centroid(centroids @ w))
        )
    return AlignmentProblem("synthetic", "ap", x[:n], x[n:], tuple(users))

"""Groups of users for the clustered AP: who shares a precoder with whom.

The clustered method (:class:`~common.parties.consensus.ClusteredAccessPoint`) runs one
federated consensus per group of users. This module says how the groups are made:

- ``model``: users that run the same encoder share a group (labels in order of each
  model's first user);
- ``given``: an explicit label per user;
- ``kmeans``: the AP clusters the users from what reaches it anyway, their local
  precoders ``F_k`` (never their latents), with scikit-learn's :class:`~sklearn.cluster.KMeans`.

A regrouping keeps the labels as stable as it can: the new clusters are matched to
the old groups by their shared members (:func:`scipy.optimize.linear_sum_assignment`),
so a group keeps its label, its precoder state and its place in the tables. Users
the AP first hears from after a clustering join the group of the nearest centre
(:func:`nearest`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

GROUPINGS = ("model", "kmeans", "given")  # strategy.grouping
KMEANS_RESTARTS = 10  # KMeans(n_init=...): fixed, so a seed gives one grouping everywhere


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How the users are grouped (``strategy.clusters``, ``grouping``, ``groups``,
    ``regroup_every``), with what the rule needs to know of them.

    Attributes
    ----------
    rule : str
        ``model``, ``kmeans`` or ``given`` (:data:`GROUPINGS`).
    clusters : int or None
        The number of groups ``C``: given for ``kmeans``; for the other rules ``None``
        (as many as the rule makes) or that number.
    labels : tuple of int or None
        ``given``: user k's group, ``0..C-1``, one per user of the run.
    regroup_every : int
        ``kmeans``: re-cluster every this many rounds after the first clustering (0: never).
    models : tuple of str
        Each user's encoder, by user index (read by ``model``).
    """

    rule: str = "model"
    clusters: int | None = None
    labels: tuple[int, ...] | None = None
    regroup_every: int = 0
    models: tuple[str, ...] = ()

    def initial(self, users: Sequence[int]) -> dict[int, int]:
        """Each user's group before any training round.

        ``model``: groups in order of each model's first user (round-robin users over
        ``M`` models: user k in group ``k mod M``); ``given``: the labels; ``kmeans``:
        every user in group 0 until the AP has heard from them (:meth:`due`).

        Parameters
        ----------
        users : sequence of int
            The users the AP serves (indices into ``models`` and ``labels``).

        Returns
        -------
        dict of int to int
            User → group label.

        Raises
        ------
        ValueError
            ``model`` without a model for some user, or ``given`` without a label for one.
        """
        if self.rule == "kmeans":
            return {k: 0 for k in users}
        if self.rule == "given":
            if self.labels is None or max(users, default=0) >= len(self.labels):
                raise ValueError("grouping 'given' needs one label per user (strategy.groups)")
            return {k: int(self.labels[k]) for k in users}
        if self.rule != "model":
            raise ValueError(f"unknown grouping {self.rule!r}; known: {', '.join(GROUPINGS)}")
        if max(users, default=0) >= len(self.models):
            raise ValueError("grouping 'model' needs every user's model (users.models)")
        order: dict[str, int] = {}
        return {k: order.setdefault(self.models[k], len(order)) for k in sorted(users)}

    def count(self, users: Sequence[int]) -> int:
        """The number of groups ``C`` the rule makes of ``users``: ``clusters`` for
        ``kmeans``, else the labels ``0..C-1`` :meth:`initial` uses."""
        if self.rule == "kmeans":
            return int(self.clusters or 1)
        return max(self.initial(users).values()) + 1

    def due(self, rnd: int, last: int) -> bool:
        """Whether ``kmeans`` clusters the users after round ``rnd``, the last clustering
        having been after round ``last`` (0: none yet): after round 1, then every
        ``regroup_every`` rounds (a due clustering that cannot be made waits for the next
        round that can, :func:`cluster`)."""
        if self.rule != "kmeans":
            return False
        if last == 0:
            return True
        return self.regroup_every > 0 and rnd - last >= self.regroup_every


def features(precoders: Mapping[int, np.ndarray]) -> tuple[list[int], np.ndarray]:
    """What k-means groups: each user's local precoder ``F_k``, its real and imaginary
    parts flattened and scaled to unit norm (the power budget is the same for all, the
    direction is what tells users apart).

    Parameters
    ----------
    precoders : Mapping of int to ndarray, each shape (Nt·u, m), complex128
        The local precoders by user.

    Returns
    -------
    users : list of int
        The users, sorted (the rows' order).
    x : ndarray, shape (len(users), 2·Nt·u·m), float64
        One row per user.
    """
    users = sorted(precoders)
    x = np.stack(
        [np.concatenate([precoders[k].real.ravel(), precoders[k].imag.ravel()]) for k in users]
    )
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return users, x / np.where(norms > 0, norms, 1.0)


def cluster(
    precoders: Mapping[int, np.ndarray], clusters: int, seed: int, previous: Mapping[int, int]
) -> tuple[dict[int, int], np.ndarray] | None:
    """Group the users whose local precoders reached the AP into ``clusters`` groups.

    :class:`sklearn.cluster.KMeans` (``random_state=seed``, ``n_init`` =
    :data:`KMEANS_RESTARTS`) on :func:`features`; the clusters are then labelled after the
    previous groups they share most members with (:func:`relabel`). Users not in
    ``precoders`` keep their group.

    Parameters
    ----------
    precoders : Mapping of int to ndarray, each shape (Nt·u, m), complex128
        This round's local precoders ``F_k`` by user.
    clusters : int
        The number of groups ``C`` (≥ 2).
    seed : int
        The run's seed (the clustering is the same for a seed in every process).
    previous : Mapping of int to int
        Every user's group so far.

    Returns
    -------
    labels : dict of int to int
        Every user's new group.
    centroids : ndarray, shape (clusters, 2·Nt·u·m), float64
        Group c's centre in :func:`features`' space, row c (for :func:`nearest`).

    ``None`` instead when fewer than ``clusters`` distinct precoders arrived (the
    clustering waits for a round with enough).
    """
    from sklearn.cluster import KMeans

    users, x = features(precoders)
    if len(np.unique(x.round(12), axis=0)) < clusters:
        return None
    fitted = KMeans(n_clusters=clusters, n_init=KMEANS_RESTARTS, random_state=seed).fit(x)
    found = {k: int(c) for k, c in zip(users, fitted.labels_, strict=True)}
    mapping = relabel(found, previous, clusters)
    centroids = np.empty_like(fitted.cluster_centers_)
    for c, label in mapping.items():
        centroids[label] = fitted.cluster_centers_[c]
    labels = {k: mapping[found[k]] if k in found else g for k, g in previous.items()}
    return labels, centroids


def nearest(precoders: Mapping[int, np.ndarray], centroids: np.ndarray) -> dict[int, int]:
    """The group whose centre is nearest to each user's :func:`features` (Euclidean, as
    k-means assigns; ties to the lower label).

    Parameters
    ----------
    precoders : Mapping of int to ndarray, each shape (Nt·u, m), complex128
        Local precoders by user.
    centroids : ndarray, shape (C, 2·Nt·u·m), float64
        The groups' centres (:func:`cluster`).

    Returns
    -------
    dict of int to int
        User → group.
    """
    if not precoders:
        return {}
    users, x = features(precoders)
    distances = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return {k: int(c) for k, c in zip(users, distances.argmin(axis=1), strict=True)}


def relabel(found: Mapping[int, int], previous: Mapping[int, int], clusters: int) -> dict[int, int]:
    """Map new cluster labels ``0..C-1`` onto the previous groups' labels so that as many
    users as possible keep theirs (:func:`scipy.optimize.linear_sum_assignment` on the
    clusters' shared members; deterministic).

    Parameters
    ----------
    found : Mapping of int to int
        User → new cluster (``0..clusters-1``).
    previous : Mapping of int to int
        User → previous group (``0..clusters-1``).
    clusters : int
        ``C``.

    Returns
    -------
    dict of int to int
        New cluster → the group label it takes (a permutation of ``0..C-1``).
    """
    from scipy.optimize import linear_sum_assignment

    shared = np.zeros((clusters, clusters))
    for k, c in found.items():
        shared[c, previous[k]] += 1
    rows, cols = linear_sum_assignment(shared, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}

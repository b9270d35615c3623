"""The paper's study: the points behind every figure, as grids over the run settings.

Grids follow the paper's experiments (``docs/EXPERIMENTS.md``: six seeds, u ∈ {1, 2, 4, 6,
8, 10, 20}, square antenna pairs, Top-K up to u = 10, SNR from −20 to 30 dB,
both user groups at 100/50/10 % pilots). ``quick`` gives a small version of
each grid with the same structure, for tests and a first look.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.run.settings import RunSettings

PAPER_SEEDS = (27, 42, 100, 123, 144, 200)
CHANNEL_USES = (1, 2, 4, 6, 8, 10, 20)
TOP_K_CHANNEL_USES = (1, 2, 3, 4, 5, 10)  # its indices cost as many channel uses again
ANTENNA_PAIRS = ((1, 1), (2, 2), (4, 4))
SNR_DB = (-20.0, -10.0, 10.0, 20.0, 30.0)
SNR_CHANNEL_USES = {"federated": (1, 4, 8), "first_k": (1, 4, 8), "top_k": (2, 4)}
GROUPS = ("heterogeneous", "homogeneous")
PILOT_FRACTIONS = (1.0, 0.5, 0.1)
# Beyond the paper: consensus rules against faulty users, and partial participation.
AGGREGATORS = ("mean", "weighted_mean", "median", "trimmed_mean")
FAULTY_USERS = (0, 1, 2, 3)
PARTICIPATION = (0.25, 0.5, 0.75, 1.0)
CORRELATIONS = (0.0, 0.3, 0.6, 0.9)
K_FACTORS = (0.0, 1.0, 3.0, 10.0, 30.0)
CSI_SNR_DB = (-10.0, 0.0, 10.0, 20.0, 30.0)
AGEING = (0.5, 0.7, 0.9, 0.95, 0.99, 1.0)
# Many users: K drawn in turn from a group's models; the methods compared as K grows, and
# partial participation at the largest K. One seed by default: a K = 1,000 point is a
# thousand users' runs.
USER_COUNTS = (8, 32, 128, 512, 1000)
USER_METHODS = ("federated", "multi_link", "first_k", "eigen_k")
USER_CHANNEL_USES = (1, 4)
USER_PARTICIPATION = (0.1, 0.25, 0.5, 1.0)
USER_SEEDS = (42,)
# Groups of users: the clustered method between one precoder (federated) and one per user
# (multi-link), at K users drawn in turn from the heterogeneous and the homogeneous group's
# 4 models and from all 8 of the embedded zoo; k-means with each of CLUSTER_COUNTS.
CLUSTER_USERS = (64, 256)
CLUSTER_GROUPS = ("heterogeneous", "homogeneous", "all")
CLUSTER_COUNTS = (2, 4, 8, 16)
# Channels that move: the default run (8 users, 4×4, u = 4, 20 dB, 30 rounds) on TDL-A
# (100 ns) and CDL-C (100 ns, ULAs) at 3.5 GHz, then TRACKING_SLOTS deployment slots of
# TRACKING_SLOT_S each (20 ms), at each speed (3, 30, 120 km/h in m/s), under each policy:
# (policy, every, pilots (None: all), rounds): none; equalizer refreshes on 64 pilots from
# every 2 to every 32 slots; every 4 slots on 16, 256 and all pilots; every 16 slots on all
# pilots and full every 16
TRACKING_CHANNELS = (("tdl", "A"), ("cdl", "C"))
TRACKING_SPEEDS = (3 / 3.6, 30 / 3.6, 120 / 3.6)
TRACKING_SLOTS, TRACKING_SLOT_S = 80, 0.25e-3
TRACKING_POLICIES = (
    ("none", 1, None, 1),
    *(("equalizer", every, 64, 1) for every in (2, 4, 8, 16, 32)),  # 0.5 to 8 ms
    *(("equalizer", 4, pilots, 1) for pilots in (16, 256, None)),
    ("equalizer", 16, None, 1),  # beside full at the same interval
    ("full", 16, None, 2),
)
# The grids' axes by config key, as a Hydra sweep names them (docs/EXPERIMENTS.md).
STRATEGY, USES = "strategy.name", "communication.channel_usage"


@dataclass(frozen=True)
class StudyGrid:
    """Axis values of one study; ``quick`` keeps each axis short."""

    seeds: tuple[int, ...] = PAPER_SEEDS
    channel_uses: tuple[int, ...] = CHANNEL_USES
    top_k_channel_uses: tuple[int, ...] = TOP_K_CHANNEL_USES
    antenna_pairs: tuple[tuple[int, int], ...] = ANTENNA_PAIRS
    snr_db: tuple[float, ...] = SNR_DB
    snr_channel_uses: tuple[tuple[str, tuple[int, ...]], ...] = tuple(SNR_CHANNEL_USES.items())
    pilot_fractions: tuple[float, ...] = PILOT_FRACTIONS
    faulty_users: tuple[int, ...] = FAULTY_USERS
    participation: tuple[float, ...] = PARTICIPATION
    correlations: tuple[float, ...] = CORRELATIONS
    k_factors: tuple[float, ...] = K_FACTORS
    csi_snr_db: tuple[float, ...] = CSI_SNR_DB
    ageing: tuple[float, ...] = AGEING
    user_counts: tuple[int, ...] = USER_COUNTS
    user_channel_uses: tuple[int, ...] = USER_CHANNEL_USES
    user_participation: tuple[float, ...] = USER_PARTICIPATION
    user_seeds: tuple[int, ...] = USER_SEEDS
    cluster_users: tuple[int, ...] = CLUSTER_USERS
    cluster_counts: tuple[int, ...] = CLUSTER_COUNTS

    @classmethod
    def quick(cls, seeds: tuple[int, ...] = (42,)) -> StudyGrid:
        return cls(
            seeds=seeds,
            channel_uses=(1, 4),
            top_k_channel_uses=(1, 4),
            antenna_pairs=((2, 2), (4, 4)),
            snr_db=(-10.0, 20.0),
            snr_channel_uses=(("federated", (4,)), ("first_k", (4,)), ("top_k", (2,))),
            pilot_fractions=(1.0, 0.1),
            faulty_users=(0, 2),
            participation=(0.5, 1.0),
            correlations=(0.0, 0.9),
            k_factors=(0.0, 10.0),
            csi_snr_db=(0.0, 20.0),
            ageing=(0.7, 1.0),
            user_counts=(8, 24),
            user_channel_uses=(4,),
            user_participation=(0.5, 1.0),
            user_seeds=seeds[:1],
            cluster_users=(16,),
            cluster_counts=(2, 4),
        )


def _product(base: RunSettings, axes: Mapping[str, Iterable]) -> list[RunSettings]:
    """``base`` at every combination of the ``axes`` (dotted config keys, as a Hydra sweep
    names them)."""
    names = list(axes)
    return [
        base.replace(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*axes.values())
    ]


def compression_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Accuracy and MSE vs ζ: every method (and Eigen-K), every square antenna pair, every
    seed, 20 dB."""
    points = []
    for (n_tx, n_rx), seed in itertools.product(grid.antenna_pairs, grid.seeds):
        at = base.replace(antennas_tx=n_tx, antennas_rx=n_rx, seed=seed)
        points += _product(
            at,
            {STRATEGY: ("federated", "multi_link", "first_k", "eigen_k"), USES: grid.channel_uses},
        )
        points += _product(at, {STRATEGY: ("top_k",), USES: grid.top_k_channel_uses})
    return points


def snr_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Accuracy vs SNR at 4×4: federated and First-K at u ∈ {1, 4, 8}, Top-K at u ∈ {2, 4}."""
    at = base.replace(antennas_tx=4, antennas_rx=4)
    points = []
    for method, uses in grid.snr_channel_uses:
        points += _product(
            at,
            {STRATEGY: (method,), USES: uses, "communication.snr": grid.snr_db, "seed": grid.seeds},
        )
    return points


def group_points(base: RunSettings, grid: StudyGrid, models: dict[str, tuple[str, ...]]) -> list:
    """Heterogeneous vs homogeneous users (federated, 4×4) per semantic pilot fraction."""
    at = base.replace(**{STRATEGY: "federated"}, antennas_tx=4, antennas_rx=4)
    points = []
    for group in GROUPS:
        points += _product(
            at.replace(group=group, models=models[group]),
            {
                "data.pilot_fraction": grid.pilot_fractions,
                USES: grid.channel_uses,
                "seed": grid.seeds,
            },
        )
    return points


def fault_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Each consensus rule vs the number of users sending noise (federated, 4×4, u = 4)."""
    at = base.replace(
        **{STRATEGY: "federated", USES: 4, "faults.kind": "random", "faults.scale": 100.0},
        antennas_tx=4,
        antennas_rx=4,
    )
    return _product(
        at,
        {
            "consensus.aggregator": AGGREGATORS,
            "faults.users": grid.faulty_users,
            "seed": grid.seeds,
        },
    )


def participation_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Accuracy vs the share of users trained with per round (federated, 4×4, u ∈ {1, 4})."""
    at = base.replace(**{STRATEGY: "federated"}, antennas_tx=4, antennas_rx=4)
    return _product(
        at, {"consensus.participation": grid.participation, USES: (1, 4), "seed": grid.seeds}
    )


def channel_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Beyond i.i.d. Rayleigh with perfect CSI (4×4, u = 4, 20 dB): federated and First-K vs
    antenna correlation, vs Rician K and vs channel ageing; federated vs the SNR of channel
    estimation (LS, LMMSE) beside perfect CSI."""
    at = base.replace(**{USES: 4}, antennas_tx=4, antennas_rx=4)
    methods = ("federated", "first_k")
    points = _product(
        at.replace(model="correlated"),
        {STRATEGY: methods, "communication.correlation": grid.correlations, "seed": grid.seeds},
    )
    points += _product(
        at.replace(model="rician"),
        {STRATEGY: methods, "communication.k_factor": grid.k_factors, "seed": grid.seeds},
    )
    points += _product(at, {STRATEGY: methods, "csi.ageing": grid.ageing, "seed": grid.seeds})
    points += _product(
        at.replace(**{STRATEGY: "federated"}),
        {"csi.estimation": ("ls", "lmmse"), "csi.snr": grid.csi_snr_db, "seed": grid.seeds},
    )
    return list({c.to_json(): c for c in points}.values())


def user_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Many users (4×4, 20 dB): federated, multi-link, First-K and Eigen-K vs the number of
    users K, drawn in turn from the heterogeneous and the homogeneous group's models, at
    each of ``user_channel_uses``; and federated vs participation at the largest K (u = 4),
    for the heterogeneous group."""
    at = base.replace(antennas_tx=4, antennas_rx=4)
    points = []
    for group in GROUPS:
        points += _product(
            at.replace(group=group, models=None),
            {
                STRATEGY: USER_METHODS,
                USES: grid.user_channel_uses,
                "users.count": grid.user_counts,
                "seed": grid.user_seeds,
            },
        )
    most = at.replace(
        **{
            "users.group": "heterogeneous",
            "users.models": None,
            "users.count": max(grid.user_counts),
        }
    )
    points += _product(
        most.replace(**{STRATEGY: "federated", USES: 4}),
        {"consensus.participation": grid.user_participation, "seed": grid.user_seeds},
    )
    return list({p.to_json(): p for p in points}.values())


def cluster_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Groups of users (4×4, u = 4, 20 dB, the models of each of :data:`CLUSTER_GROUPS` in
    turn): the clustered method grouped by model and by k-means into each of
    ``cluster_counts`` groups (those below K), beside federated (one group) and multi-link
    (one per user), at each of ``cluster_users`` users."""
    at = base.replace(**{"antennas_tx": 4, "antennas_rx": 4, USES: 4})
    points = []
    for group, k in itertools.product(CLUSTER_GROUPS, grid.cluster_users):
        # the group's models, drawn in turn: named together, or the base's models stay
        users = at.replace(**{"users.group": group, "users.models": None, "users.count": k})
        for seed in grid.user_seeds:
            run = users.replace(seed=seed)
            points += [run.replace(**{STRATEGY: m}) for m in ("federated", "multi_link")]
            points.append(run.replace(**{STRATEGY: "clustered", "strategy.grouping": "model"}))
            points += [
                run.replace(
                    **{STRATEGY: "clustered", "strategy.grouping": "kmeans", "strategy.clusters": c}
                )
                for c in grid.cluster_counts
                if 2 <= c < k
            ]
    return list({p.to_json(): p for p in points}.values())


def tracking_points(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Channels that move (one seed, the first of ``grid.user_seeds``): the default run on each of
    :data:`TRACKING_CHANNELS` at 3.5 GHz, then a deployment phase of
    :data:`TRACKING_SLOTS` slots of :data:`TRACKING_SLOT_S` s from the training channel,
    at each of :data:`TRACKING_SPEEDS` under each of :data:`TRACKING_POLICIES`."""
    points = []
    for (model, profile), speed in itertools.product(TRACKING_CHANNELS, TRACKING_SPEEDS):
        at = base.replace(
            seed=grid.user_seeds[0],
            **{
                "communication.model": model,
                "communication.profile": profile,
                "communication.carrier_frequency": 3.5e9,
                "communication.speed": round(speed, 4),
                "tracking.slots": TRACKING_SLOTS,
                "tracking.slot_duration": TRACKING_SLOT_S,
            },
        )
        for policy, every, pilots, rounds in TRACKING_POLICIES:
            options: dict = {"tracking.policy": policy}
            if policy != "none":
                options["tracking.every"] = every
            if policy == "equalizer":
                options["tracking.pilots"] = pilots
            if policy == "full":
                options["tracking.rounds"] = rounds
            points.append(at.replace(**options))
    return points

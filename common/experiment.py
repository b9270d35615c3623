"""What one experiment is: its settings and its inputs (AP and user latents, heads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common import validation
from common.access_point import access_point_class, canonical_method
from common.link import LinkConfig
from common.seeding import check_seed
from common.user import UserData


@dataclass(frozen=True)
class ExperimentConfig:
    """Method, ADMM and link settings, pilots and seed of one run."""

    method: str = "federated"
    rounds: int = 30
    rho: float = 1.0
    link: LinkConfig = field(default_factory=LinkConfig)
    pilot_fraction: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        access_point_class(self.method)  # unknown names fail here, before any work
        object.__setattr__(self, "method", canonical_method(self.method))
        validation.positive_int("rounds", self.rounds)
        validation.positive_float("rho", self.rho)
        validation.fraction("pilot_fraction", self.pilot_fraction)
        check_seed(self.seed)


@dataclass(frozen=True)
class AlignmentProblem:
    """The numbers one experiment runs on: AP latents and each user's private data."""

    dataset: str
    ap_model: str
    ap_pilots: np.ndarray  # (n, d)
    ap_test: np.ndarray  # (n_test, d)
    users: tuple[UserData, ...]

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("an alignment problem needs at least one user")
        n = self.ap_pilots.shape[0]
        for k, user in enumerate(self.users):
            if user.pilots.shape[0] != n:
                raise ValueError(
                    f"mismatched pilot counts: the AP has {n} pilots, user {k} ({user.name}) "
                    f"has {user.pilots.shape[0]}"
                )

    @property
    def n_pilots(self) -> int:
        return self.ap_pilots.shape[0]

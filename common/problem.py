"""From cached assets (latents, heads) to the engine's inputs.

The AP and each user select the same semantic pilots independently: the pilot
indices depend only on the training labels, ``pilot_fraction`` and the seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.assets import HeadAsset, ModelLatents, Scenario
from common.data import pilot_indices
from common.experiment import AlignmentProblem
from common.heads import predict
from common.user import UserData


def pilots_for(labels: Mapping[str, np.ndarray], pilot_fraction: float, seed: int) -> np.ndarray:
    return pilot_indices(labels["train"], pilot_fraction, seed)


def head_predictor(head: HeadAsset):
    """The user's classifier as a plain latents → labels function."""
    module = head.module()
    return lambda z: predict(module, z)


def user_data(
    latents: ModelLatents, head: HeadAsset, labels: Mapping[str, np.ndarray], pilots: np.ndarray
) -> UserData:
    return UserData(
        name=latents.model,
        pilots=latents.splits["train"][pilots],
        test=latents.splits["test"],
        test_labels=labels["test"],
        predict=head_predictor(head),
    )


def problem_from_scenario(
    scenario: Scenario, pilot_fraction: float, seed: int
) -> AlignmentProblem:
    pilots = pilots_for(scenario.labels, pilot_fraction, seed)
    users = tuple(
        user_data(lat, head, scenario.labels, pilots)
        for lat, head in zip(scenario.users, scenario.heads, strict=True)
    )
    return AlignmentProblem(
        dataset=scenario.dataset,
        ap_model=scenario.ap.model,
        ap_pilots=scenario.ap.splits["train"][pilots],
        ap_test=scenario.ap.splits["test"],
        users=users,
    )

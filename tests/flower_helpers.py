"""Importable helpers for Flower tests (Ray workers unpickle them by reference)."""

from __future__ import annotations

from common.parties.consensus import AdmmUser
from common.run.session import build_user
from common.run.settings import RunSettings
from common.run.sources import ProblemSource


class FaultyUser(AdmmUser):
    """Raises whenever it is asked to train again after its first round."""

    def train(self, message):
        if self.g is not None:
            raise RuntimeError(f"user {self.index} lost its radio")
        return super().train(message)


def faulty_second_user(index: int, source: ProblemSource, settings: RunSettings):
    if index == 1:
        return FaultyUser(index, source.user_data(index), settings.link, settings.seed)
    return build_user(settings, index, source.user_data(index))

"""Importable helpers for Flower tests (Ray workers unpickle them by reference)."""

from __future__ import annotations

from common.settings import RunSettings
from common.sources import ProblemSource
from common.user import User


class FaultyUser(User):
    """Raises whenever it is asked to train again after its first round."""

    def train(self, message):
        if self.g is not None:
            raise RuntimeError(f"user {self.index} lost its radio")
        return super().train(message)


def faulty_second_user(index: int, source: ProblemSource, settings: RunSettings) -> User:
    cls = FaultyUser if index == 1 else User
    return cls(index, source.user_data(index), settings.link, settings.seed)

"""A consensus rule of one's own, named by import path in the tests
(``consensus.aggregator=tests.rules:TakesParticipation``)."""

from __future__ import annotations

import math

from common.maths.aggregation import TrimmedMean


class TakesParticipation(TrimmedMean):
    """Trimmed mean whose constructor also takes ``participation`` by name (the run passes
    every consensus setting a rule's constructor names)."""

    def __init__(self, trim_fraction: float, participation: float) -> None:
        super().__init__(trim_fraction)
        self.participation = participation

    def trimmed(self, count: int) -> int:
        return math.floor(self.trim_fraction * count)

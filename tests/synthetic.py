"""Synthetic alignment problems for tests (see :class:`common.sources.SyntheticSource`)."""

from __future__ import annotations

from common.experiment import AlignmentProblem
from common.sources import SyntheticSource


def make_problem(**kwargs) -> AlignmentProblem:
    return SyntheticSource(**kwargs).problem()

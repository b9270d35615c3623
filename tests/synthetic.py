"""Synthetic alignment problems and settings for them (see :class:`SyntheticSource`)."""

from __future__ import annotations

from common.maths.link import LinkConfig
from common.run.settings import RunSettings
from common.run.sources import AlignmentProblem, SyntheticSource
from conf import settings


def make_problem(**kwargs) -> AlignmentProblem:
    return SyntheticSource(**kwargs).problem()


def settings_for(problem: AlignmentProblem, **changes) -> RunSettings:
    """The configured defaults, with ``problem``'s users and the given changes."""
    models = tuple(user.name for user in problem.users)
    return settings().replace(models=models, progress=False, **changes)


def link(**changes) -> LinkConfig:
    """The configured default link with some values changed (by field name)."""
    base = settings().link.model_dump(include=set(LinkConfig.model_fields))
    return LinkConfig(**{**base, **changes})

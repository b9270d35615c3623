"""The configuration: Hydra YAML defaults (every default, once) and their composition.

``run_simulation.py`` composes this folder through ``@hydra.main``; everything
else (``flwr run``, tests, benchmarks) composes it here. ``flwr run`` carries
one ``overrides`` string in Hydra syntax in its run config (e.g.
``"strategy=multi_link communication.channel_usage=2"``), so every party of a
deployed run builds the same :class:`~common.run.settings.RunSettings`.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.run.settings import RunSettings

CONF_DIR = Path(__file__).resolve().parent


def validated(cfg: Mapping[str, Any]) -> RunSettings:
    """The settings of a composed config; the schema refuses keys no part of the program
    reads (``+typo=1``) and bad values, naming the key (:class:`ConfigError`)."""
    return RunSettings.from_config(cfg)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The composed config as a plain dict (no Hydra run directory, no logging set-up)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


@functools.lru_cache(maxsize=8)
def settings_from_overrides(overrides: str = "") -> RunSettings:
    """Validated settings from a Hydra override string (the defaults when empty)."""
    return validated(compose(shlex.split(overrides)))


def settings(*overrides: str) -> RunSettings:
    """Validated settings from Hydra overrides, e.g. ``settings("strategy=top_k")``."""
    return settings_from_overrides(shlex.join(overrides))


def settings_from_run_config(run_config: Mapping[str, Any]) -> RunSettings:
    """The settings of a ``flwr run``: its run config's ``overrides`` string."""
    return settings_from_overrides(str(run_config.get("overrides", "")))


def sweep_points(overrides: str) -> list[tuple[str, RunSettings]]:
    """Every point of a sweep in Hydra's syntax (``"seed=1,2 strategy=federated,top_k"``).

    Returns each point's own override string and validated settings, in Hydra's
    order; a string without sweeps gives one point. A bad value names its point.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(shlex.split(overrides))
    points = []
    for number, point in enumerate(BasicSweeper.split_arguments(parsed, None)[0]):
        text = shlex.join(point)
        try:
            points.append((text, settings_from_overrides(text)))
        except ValueError as exc:
            raise type(exc)(f"sweep point #{number} ({text}): {exc}") from None
    return points

"""From Flower's run config (``flwr run``) to validated run settings via Hydra.

``[tool.flwr.app.config]`` carries one ``overrides`` string in Hydra syntax
(e.g. ``"strategy=multi_link communication.channel_usage=2"``); every party
composes ``conf/`` with it, so ``flwr run`` and ``run_simulation.py`` accept
the same keys.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.settings import RunSettings, settings_from_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str]) -> dict[str, Any]:
    """The composed config as a plain dict (no Hydra run directory, no logging setup)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


@functools.lru_cache(maxsize=8)
def settings_from_overrides(overrides: str) -> RunSettings:
    return settings_from_config(compose(shlex.split(overrides)))


def settings_from_run_config(run_config: Mapping[str, Any]) -> RunSettings:
    return settings_from_overrides(str(run_config.get("overrides", "")))

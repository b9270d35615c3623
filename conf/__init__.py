"""The configuration: Hydra YAML defaults (every default, once) and their composition.

``run_simulation.py`` composes this folder through ``@hydra.main``; everything
else (``flwr run``, tests, benchmarks) composes it here. ``flwr run`` carries
one ``overrides`` string in Hydra syntax in its run config (e.g.
``"strategy=multi_link communication.channel_usage=2"``), so every party of a
deployed run builds the same :class:`~common.run.settings.RunSettings`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.run.settings import ConfigError, RunSettings, refuse_unused

CONF_DIR = Path(__file__).resolve().parent


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The setting keys that Hydra overrides set (``communication.snr=5`` → its key; a
    group choice such as ``channel=rician`` sets no single setting and is left out).

    Parameters
    ----------
    overrides : sequence of str
        Hydra overrides as written on a command line (one per item, Hydra's grammar).

    Raises
    ------
    ConfigError
        An override Hydra's grammar cannot parse.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(f"overrides {' '.join(overrides)!r} do not parse: {exc}") from None
    known = set(RunSettings.keys())
    return [o.key_or_group for o in parsed if o.key_or_group in known]


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


def split_overrides(text: str) -> list[str]:
    """A string of Hydra overrides as the command line would pass them, one item each:
    split at white space outside quotes, the quotes kept for Hydra's grammar to read
    (``"simulation='my label' seed=1,2"`` → ``["simulation='my label'", "seed=1,2"]``).

    Every entry point that takes overrides as one string (``flwr run``'s run config, the
    scripts, tests) splits it here, so a quoted value stays whole, as on Hydra's command
    line (``simulation='compr,snr'`` is one value, not a sweep).

    Raises
    ------
    ConfigError
        A quote is not closed.
    """
    out: list[str] = []
    token: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote is not None:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if token:
                out.append("".join(token))
                token = []
            continue
        token.append(ch)
    if quote is not None:
        raise ConfigError(f"overrides {text!r}: a {quote} quote is not closed")
    if token:
        out.append("".join(token))
    return out


def settings_from_overrides(overrides: str = "") -> RunSettings:
    """Validated settings from a Hydra override string (the defaults when empty); a
    setting given that the run does not read is refused (:func:`refuse_unused`)."""
    return _checked(tuple(split_overrides(overrides)))


def settings(*overrides: str) -> RunSettings:
    """Validated settings from Hydra overrides, e.g. ``settings("strategy=top_k")``."""
    return _checked(tuple(overrides))


@functools.lru_cache(maxsize=8)
def _checked(overrides: tuple[str, ...]) -> RunSettings:
    settings = _composed(overrides)
    refuse_unused([(override_keys(overrides), settings)])
    return settings


@functools.lru_cache(maxsize=8)
def _composed(overrides: tuple[str, ...]) -> RunSettings:
    return validated(compose(overrides))


def settings_from_run_config(run_config: Mapping[str, Any]) -> RunSettings:
    """The settings of a ``flwr run``: its run config's ``overrides`` string."""
    return settings_from_overrides(str(run_config.get("overrides", "")))


def sweep_points(overrides: str) -> list[tuple[str, RunSettings]]:
    """Every point of a sweep in Hydra's syntax (``"seed=1,2 strategy=federated,top_k"``).

    Returns each point's own override string and validated settings, in Hydra's
    order, each distinct point once; a string without sweeps gives one point. A bad
    value names its point.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    tokens = split_overrides(overrides)
    override_keys(tokens)  # refuses what Hydra's grammar cannot parse, naming it
    parsed = OverridesParser.create().parse_overrides(tokens)
    points: dict[str, tuple[list[str], RunSettings]] = {}  # by settings: each point once
    for number, point in enumerate(BasicSweeper.split_arguments(parsed, None)[0]):
        try:
            settings = _composed(tuple(point))
        except ValueError as exc:
            raise type(exc)(f"sweep point #{number} ({' '.join(point)}): {exc}") from None
        points.setdefault(settings.to_json(), (point, settings))  # seed=11,11 runs once
    refuse_unused([(override_keys(point), settings) for point, settings in points.values()])
    return [(" ".join(point), settings) for point, settings in points.values()]

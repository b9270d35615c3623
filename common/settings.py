"""Run settings: the validated, serialisable view of one experiment's configuration.

Hydra composes ``conf/``; this module turns the resulting plain mapping into
:class:`RunSettings`, checking every value before anything expensive starts (a
bad value names its config key, the value and what is allowed). The same JSON
travels to the ServerApp and every ClientApp, so all parties agree on the run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from common import validation
from common.access_point import access_point_class, canonical_method
from common.data import DATASETS
from common.experiment import ExperimentConfig
from common.link import LinkConfig
from common.seeding import check_seed


class ConfigError(ValueError):
    """A configuration value is invalid; the message names key, value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    dataset: str = "mnist5k"
    data_root: str | None = None
    split_seed: int = 0
    pilot_fraction: float = 1.0
    zoo: str = "embedded"
    group: str = "all"
    models: tuple[str, ...] = ()  # the users' zoo names, resolved from group/count
    head_seed: int = 0
    method: str = "federated"
    rho: float = 1.0
    rounds: int = 30
    antennas_tx: int = 4
    antennas_rx: int = 4
    channel_uses: int = 4
    snr_db: float = 20.0
    power: float = 1.0
    seed: int = 42
    cache_dir: str | None = None
    weights_dir: str | None = None
    cpus_per_user: float = 1.0
    progress: bool = True

    @property
    def num_users(self) -> int:
        return len(self.models)

    @property
    def link(self) -> LinkConfig:
        return LinkConfig(
            antennas_tx=self.antennas_tx,
            antennas_rx=self.antennas_rx,
            channel_uses=self.channel_uses,
            snr_db=self.snr_db,
            power=self.power,
        )

    def experiment(self) -> ExperimentConfig:
        return ExperimentConfig(
            method=self.method,
            rounds=self.rounds,
            rho=self.rho,
            link=self.link,
            pilot_fraction=self.pilot_fraction,
            seed=self.seed,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        raw = json.loads(text)
        raw["models"] = tuple(raw["models"])
        return cls(**raw)


def _get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _check(key: str, value: Any, check) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f"config key {key!r} = {value!r} is invalid: {exc}") from None


def resolve_method(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """The strategy name and the key it came from (the paper's aliases win when set)."""
    for key in ("base_station.strategy", "base_station.status", "strategy.name"):
        value = _get(cfg, key)
        if value is not None:
            return str(value), key
    return "federated", "strategy.name"


def _resolve_models(cfg: Mapping[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    from common.zoo import get_zoo  # torch/timm only when a config is actually resolved

    zoo_name = str(_get(cfg, "users.zoo", "embedded"))
    zoo = _check("users.zoo", zoo_name, get_zoo)
    group = str(_get(cfg, "users.group", "all"))
    explicit = _get(cfg, "users.models")
    if explicit:
        models = tuple(str(m) for m in explicit)
        for name in models:
            if name not in zoo.users:
                raise ConfigError(
                    f"config key 'users.models' names unknown model {name!r}; "
                    f"the {zoo_name} zoo has: {', '.join(zoo.users)}"
                )
    else:
        models = tuple(spec.name for spec in _check("users.group", group, zoo.group))
    count = _get(cfg, "users.count")
    if count is not None:
        count = _check("users.count", count, lambda v: validation.positive_int("count", v))
        if count > len(models):
            raise ConfigError(
                f"config key 'users.count' = {count} is invalid: group {group!r} of the "
                f"{zoo_name} zoo has only {len(models)} users (allowed: 1..{len(models)})"
            )
        models = models[:count]
    return zoo_name, group, models


def settings_from_config(cfg: Mapping[str, Any]) -> RunSettings:
    """Validate a composed config (plain nested mapping) into :class:`RunSettings`."""
    dataset = str(_get(cfg, "data.name", "mnist5k"))
    if dataset not in DATASETS:
        raise ConfigError(
            f"config key 'data.name' = {dataset!r} is invalid: allowed datasets are "
            f"{', '.join(DATASETS)}"
        )
    method, method_key = resolve_method(cfg)
    _check(method_key, method, access_point_class)
    zoo, group, models = _resolve_models(cfg)
    fields = {
        "experiment.rounds": ("rounds", 30, lambda v: validation.positive_int("rounds", v)),
        "strategy.rho": ("rho", 1.0, lambda v: validation.positive_float("rho", v)),
        "communication.antennas_transmitter": (
            "antennas_tx", 4, lambda v: validation.positive_int("antennas", v)),
        "communication.antennas_receiver": (
            "antennas_rx", 4, lambda v: validation.positive_int("antennas", v)),
        "communication.channel_usage": (
            "channel_uses", 4, lambda v: validation.positive_int("channel uses", v)),
        "communication.snr": ("snr_db", 20.0, lambda v: validation.snr_db("snr", v)),
        "communication.power": ("power", 1.0, lambda v: validation.positive_float("power", v)),
        "data.pilot_fraction": (
            "pilot_fraction", 1.0, lambda v: validation.fraction("pilot_fraction", v)),
        "data.split_seed": ("split_seed", 0, check_seed),
        "users.head_seed": ("head_seed", 0, check_seed),
        "seed": ("seed", 42, check_seed),
        "experiment.cpus_per_user": (
            "cpus_per_user", 1.0, lambda v: validation.positive_float("cpus_per_user", v)),
    }  # fmt: skip
    values = {
        name: _check(key, _get(cfg, key, default), check)
        for key, (name, default, check) in fields.items()
    }
    root, cache_dir, weights_dir = (
        _get(cfg, k) for k in ("data.root", "cache_dir", "weights_dir")
    )
    return RunSettings(
        dataset=dataset,
        data_root=None if root is None else str(root),
        zoo=zoo,
        group=group,
        models=models,
        method=canonical_method(method),
        cache_dir=None if cache_dir is None else str(cache_dir),
        weights_dir=None if weights_dir is None else str(weights_dir),
        progress=bool(_get(cfg, "experiment.progress", True)),
        **values,
    )

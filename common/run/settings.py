"""Run settings: the one validated, serialisable object that describes an experiment.

Every default lives in the Hydra configuration (``conf/``); this module holds
none. :func:`settings_from_config` turns a composed config (a plain nested
mapping) into :class:`RunSettings`. Each value is checked once, where it enters
(``RunSettings``/``LinkConfig`` construction); a bad value is reported under
its config key, with the value and what is allowed, before anything expensive
starts. Names (methods, datasets, zoos) are checked against the registries that
the domain modules fill, so this module imports none of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from common.maths import validation
from common.maths.conventions import NAMES as CONVENTION_NAMES
from common.maths.fading import ChannelConfig
from common.maths.link import LinkConfig
from common.maths.seeding import check_seed
from common.parties.faults import FAULT_KINDS
from common.registry import AGGREGATORS, DATASETS, METHODS, ZOOS

MAX_ROUNDS = 100_000  # ADMM converges in tens of rounds; more is a typo, not an experiment


class ConfigError(ValueError):
    """A configuration value is invalid; the message names key, value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything one experiment needs to know; the same JSON reaches every party."""

    dataset: str
    data_root: str | None
    split_seed: int
    pilot_fraction: float
    zoo: str
    group: str
    models: tuple[str, ...]  # the users' model names, resolved from group/count
    head_seed: int
    method: str
    rho: float
    rounds: int
    link: LinkConfig
    channel: ChannelConfig  # the channel model and the users' channel knowledge
    seed: int
    cache_dir: str | None
    weights_dir: str | None
    cpus_per_user: float
    progress: bool
    node_timeout: float  # seconds to wait for every user's node to join
    round_timeout: float  # seconds to wait for the replies of one round
    allow_partial: bool  # accept a run in which some user failed permanently
    resume: bool  # continue an interrupted run from the checkpoint in its output folder
    ray_address: str | None  # an existing Ray cluster to simulate on (None: a local one)
    max_failed_fraction: float  # a user failing in more of the training rounds failed
    conventions: str  # "corrected" (ALGORITHM.md) or "paper" (the paper code's)
    aggregator: str  # consensus rule: a registered name or package.module:Class
    trim_fraction: float  # share of users cut at each end by trimmed_mean
    participation: float  # share of users the AP trains with in each round
    faulty_users: int  # users 0..faulty_users-1 send corrupted uplinks
    fault: str  # how they corrupt it (scaled, random, nan)
    fault_scale: float
    # how the waits scale with the work (defaults for settings written before they existed)
    node_timeout_per_user: float = 2.0  # seconds added to node_timeout per user
    round_timeout_factor: float = 10.0  # a round waits at most this times the slowest so far

    def __post_init__(self) -> None:
        checks = {
            "split_seed": lambda v: check_seed(v, "split_seed"),
            "head_seed": lambda v: check_seed(v, "head_seed"),
            "seed": check_seed,
            "pilot_fraction": lambda v: validation.fraction("pilot_fraction", v),
            "rho": lambda v: validation.positive_float("rho", v),
            "rounds": lambda v: validation.positive_int("rounds", v, MAX_ROUNDS),
            "cpus_per_user": lambda v: validation.positive_float("cpus_per_user", v),
            "progress": lambda v: validation.boolean("progress", v),
            "node_timeout": lambda v: validation.positive_float("node_timeout", v),
            "round_timeout": lambda v: validation.positive_float("round_timeout", v),
            "node_timeout_per_user": lambda v: validation.in_range(
                "node_timeout_per_user", v, 0, 3600, "[0, 3600] seconds"),
            "round_timeout_factor": lambda v: validation.in_range(
                "round_timeout_factor", v, 0, 1e6, "[0, 1e6] (0: always round_timeout)"),
            "allow_partial": lambda v: validation.boolean("allow_partial", v),
            "resume": lambda v: validation.boolean("resume", v),
            "ray_address": _ray_address,
            "max_failed_fraction": lambda v: validation.fraction("max_failed_fraction", v),
            "method": _method,
            "dataset": lambda v: _known(DATASETS, "dataset", v),
            "zoo": lambda v: _known(ZOOS, "zoo", v),
            "conventions": lambda v: validation.one_of("conventions", v, CONVENTION_NAMES),
            "aggregator": _aggregator,
            "trim_fraction": lambda v: validation.in_range("trim_fraction", v, 0, 0.5, "[0, 0.5)",
                                                           upper_open=True),  # fmt: skip
            "participation": lambda v: validation.fraction("participation", v),
            "faulty_users": lambda v: validation.whole_number("faulty_users", v),
            "fault": _fault,
            "fault_scale": lambda v: validation.positive_float("fault_scale", v),
        }
        for name, check in checks.items():
            object.__setattr__(self, name, check(getattr(self, name)))
        object.__setattr__(self, "models", tuple(str(m) for m in self.models))
        if not self.models:
            raise validation.InvalidValue("models", "a run needs at least one user model")
        if not isinstance(self.link, LinkConfig):
            raise TypeError(f"link must be a LinkConfig, got {type(self.link).__name__}")
        if not isinstance(self.channel, ChannelConfig):
            raise TypeError(f"channel must be a ChannelConfig, got {type(self.channel).__name__}")
        if self.faulty_users > self.num_users:
            raise validation.InvalidValue(
                "faulty_users", f"faulty_users must be at most the number of users "
                f"({self.num_users}), got {self.faulty_users}",
            )  # fmt: skip
        if self.participation < 1 and METHODS.get(self.method).rounds_for(self.rounds) == 1:
            raise validation.InvalidValue(
                "participation", f"participation below 1 needs an iterative method; "
                f"{self.method} trains in one round, got {self.participation}",
            )  # fmt: skip

    @property
    def num_users(self) -> int:
        return len(self.models)

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed; link fields (``channel_uses``, …) and channel
        fields (``model``, ``ageing``, …) may be named too."""
        for name, part in (("link", LinkConfig), ("channel", ChannelConfig)):
            fields = {f.name for f in dataclasses.fields(part)}
            moved = {k: changes.pop(k) for k in list(changes) if k in fields}
            if moved:
                changes[name] = dataclasses.replace(changes.get(name, getattr(self, name)),
                                                    **moved)  # fmt: skip
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def node_wait(self) -> float:
        """Seconds to wait for every user's node to join: in proportion to the users."""
        return self.node_timeout + self.node_timeout_per_user * self.num_users

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        raw = json.loads(text)
        raw["models"] = tuple(raw["models"])
        raw["link"] = LinkConfig(**raw["link"])
        raw["channel"] = ChannelConfig(**raw["channel"])
        return cls(**raw)


def _ray_address(value: object) -> str | None:
    """None (a local Ray), ``auto`` (the cluster this machine belongs to) or ``host:port``."""
    if value is None or value == "auto":
        return value
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise validation.InvalidValue(
            "ray_address", f"ray_address must be host:port of a Ray cluster's head (as `ray "
            f"start --head` prints it), auto, or null, got {value!r}",
        )  # fmt: skip
    return str(value)


def _known(registry, name: str, value: object) -> str:
    if not isinstance(value, str) or value not in registry:
        allowed = ", ".join(registry.names())
        raise validation.InvalidValue(name, f"{name} must be one of {allowed}, got {value!r}")
    return value


def _fault(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        value = "nan"  # YAML and Hydra read a bare `nan` as the float
    return validation.one_of("fault", value, FAULT_KINDS)


def _registered(registry, name: str, value: object) -> str:
    """``value`` if ``registry`` knows it (by name, alias or import path); else InvalidValue."""
    try:
        registry.get(str(value))
    except ValueError as exc:
        raise validation.InvalidValue(name, str(exc)) from None
    return str(value)


def _aggregator(value: object) -> str:
    """A registered consensus rule, or an import path to an Aggregator subclass."""
    return _registered(AGGREGATORS, "aggregator", value)


def _method(value: object) -> str:
    """A registered method or alias (stored under its registered name), or an import path."""
    return METHODS.canonical(_registered(METHODS, "method", value))


# Where each settings field comes from in the composed config (``None``: set below).
CONFIG_KEYS = {
    "dataset": "data.name",
    "data_root": "data.root",
    "split_seed": "data.split_seed",
    "pilot_fraction": "data.pilot_fraction",
    "zoo": "users.zoo",
    "head_seed": "users.head_seed",
    "rho": "strategy.rho",
    "rounds": "experiment.rounds",
    "seed": "seed",
    "cache_dir": "cache_dir",
    "weights_dir": "weights_dir",
    "cpus_per_user": "experiment.cpus_per_user",
    "progress": "experiment.progress",
    "node_timeout": "experiment.node_timeout",
    "round_timeout": "experiment.round_timeout",
    "node_timeout_per_user": "experiment.node_timeout_per_user",
    "round_timeout_factor": "experiment.round_timeout_factor",
    "allow_partial": "experiment.allow_partial",
    "resume": "experiment.resume",
    "ray_address": "experiment.ray_address",
    "max_failed_fraction": "experiment.max_failed_fraction",
    "antennas_tx": "communication.antennas_transmitter",
    "antennas_rx": "communication.antennas_receiver",
    "channel_uses": "communication.channel_usage",
    "snr_db": "communication.snr",
    "power": "communication.power",
    "model": "communication.model",
    "correlation": "communication.correlation",
    "k_factor": "communication.k_factor",
    "coherence_uses": "communication.coherence_uses",
    "estimation": "csi.estimation",
    "csi_snr_db": "csi.snr",
    "ageing": "csi.ageing",
    "conventions": "conventions.name",
    "aggregator": "consensus.aggregator",
    "trim_fraction": "consensus.trim_fraction",
    "participation": "consensus.participation",
    "faulty_users": "faults.users",
    "fault": "faults.kind",
    "fault_scale": "faults.scale",
}
_NULLABLE = {"data_root", "cache_dir", "weights_dir", "ray_address"}
_MISSING = object()


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _value(cfg: Mapping[str, Any], key: str, *, nullable: bool = False) -> Any:
    value = _lookup(cfg, key)
    if value is _MISSING or (value is None and not nullable):
        raise ConfigError(f"config key {key!r} is missing: compose the config from conf/")
    return value


def resolve_method(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """The strategy name and the key it came from (the paper's aliases win when set)."""
    for key in ("base_station.strategy", "base_station.status"):
        value = _lookup(cfg, key)
        if value not in (None, _MISSING):
            return str(value), key
    return str(_value(cfg, "strategy.name")), "strategy.name"


def _resolve_models(cfg: Mapping[str, Any], zoo_name: str) -> tuple[str, tuple[str, ...]]:
    """The group and the users' model names from ``users.group/models/count``."""
    zoo = ZOOS.get(zoo_name)
    group = str(_value(cfg, "users.group"))
    explicit = _lookup(cfg, "users.models")
    if explicit not in (None, _MISSING):
        if isinstance(explicit, str) or not isinstance(explicit, list | tuple):
            raise ConfigError(
                f"config key 'users.models' = {explicit!r} is invalid: give a list of the "
                f"{zoo_name} zoo's model names, e.g. users.models=[resnet10t,levit_128s]"
            )
        models = tuple(str(m) for m in explicit)
        for name in models:
            if name not in zoo.users:
                raise ConfigError(
                    f"config key 'users.models' names unknown model {name!r}; "
                    f"the {zoo_name} zoo has: {', '.join(zoo.users)}"
                )
    else:
        if group not in zoo.groups:
            raise ConfigError(
                f"config key 'users.group' = {group!r} is invalid: the {zoo_name} zoo's groups "
                f"are {', '.join(sorted(zoo.groups))}"
            )
        models = tuple(zoo.groups[group])
    count = _lookup(cfg, "users.count")
    if count not in (None, _MISSING):
        try:
            count = validation.positive_int("count", count)
        except ValueError as exc:
            raise ConfigError(f"config key 'users.count' = {count!r} is invalid: {exc}") from None
        if count > len(models):
            raise ConfigError(
                f"config key 'users.count' = {count} is invalid: group {group!r} of the "
                f"{zoo_name} zoo has only {len(models)} users (allowed: 1..{len(models)})"
            )
        models = models[:count]
    return group, models


def settings_from_config(cfg: Mapping[str, Any]) -> RunSettings:
    """Validate a composed config (plain nested mapping) into :class:`RunSettings`."""
    method, method_key = resolve_method(cfg)
    keys = {**CONFIG_KEYS, "method": method_key}
    values = {
        field: _value(cfg, key, nullable=field in _NULLABLE)
        for field, key in CONFIG_KEYS.items()
    }
    values["method"] = method
    link_fields = [f.name for f in dataclasses.fields(LinkConfig)]
    try:
        zoo = _known(ZOOS, "zoo", values["zoo"])
        group, models = _resolve_models(cfg, zoo)
        link = LinkConfig(**{name: values.pop(name) for name in link_fields})
        channel = ChannelConfig(**{f.name: values.pop(f.name)
                                   for f in dataclasses.fields(ChannelConfig)})  # fmt: skip
        return RunSettings(group=group, models=models, link=link, channel=channel, **values)
    except validation.InvalidValue as exc:
        key = keys[exc.name]
        value = _lookup(cfg, key)
        raise ConfigError(f"config key {key!r} = {value!r} is invalid: {exc}") from None

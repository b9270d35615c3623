"""Run settings: the one validated, serialisable object that describes an experiment.

:class:`RunSettings` is a tree of sections that mirror the ``conf/`` groups
(``data``, ``users``, ``communication``, ``csi``, ``strategy``,
``conventions``, ``consensus``, ``faults``, ``experiment``, and a few
top-level keys). Each setting is declared once, as a field of its section
(:mod:`common.schema`): its type, the check that refuses bad values, its unit,
a line of doc and its scope (what it changes). Everything else is derived from
those declarations: the configuration keys, the refusal of unknown keys, which
settings name a sweep point (:meth:`RunSettings.identity`) and which name a
user's data.

Every default lives in the Hydra configuration (``conf/``); this module holds
none. :meth:`RunSettings.from_config` turns a composed config (a plain nested
mapping) into settings; a bad value is reported as a :class:`ConfigError`
naming its dotted key, the value and what is allowed, before anything
expensive starts. Names (methods, datasets, zoos, consensus rules) are checked
against the registries the domain modules fill, so this module imports none of
them.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import ValidationError, model_validator

from common.maths import validation
from common.maths.aggregation import Aggregator, aggregator
from common.maths.conventions import NAMES as CONVENTION_NAMES
from common.maths.fading import THREE_GPP, ChannelConfig, CsiConfig
from common.maths.link import LinkConfig
from common.maths.seeding import Stream, check_seed, rng
from common.parties.faults import FAULT_KINDS
from common.parties.grouping import GROUPINGS, Grouping
from common.registry import AGGREGATORS, DATASETS, METHODS, ZOOS, Registry
from common.schema import (
    NEVER,
    Applies,
    Scope,
    Section,
    applies_of,
    check,
    leaves,
    neutral_of,
    scope_of,
    setting,
)

MAX_ROUNDS = 100_000  # ADMM converges in tens of rounds; more is a typo, not an experiment
RHO_RANGE = (1e-12, 1e12)  # the ADMM penalty ρ: beyond, the F step over- or underflows
MAX_USERS = 1_000_000  # the users' model names alone take 8 bytes each; more is a typo
ASSIGNMENTS = ("round_robin", "random")  # how users.count users are drawn from the models
PRECISIONS = ("fp32", "bf16", "fp16")  # latents.precision: the extraction's autocast dtype
TRACKERS = ("none", "mlflow", "tensorboard", "wandb")  # logger.name: where a run is also logged
# MLflow tracking URI schemes (its stores: SQL databases, a tracking server, a folder)
TRACKING_SCHEMES = (
    "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file"
)  # fmt: skip


def _changes_results(scope: Scope) -> bool:
    return scope.changes_results


class ConfigError(ValueError):
    """A configuration value is invalid; the message names key, value and what is allowed."""


# ---- checks for values that are names or optional texts ---------------------------------


def _seed(name: str, value: object) -> int:
    return check_seed(value, name)


def _text(name: str, value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise validation.InvalidValue(name, f"{name} must be a non-empty text, got {value!r}")


def _optional_text(name: str, value: object) -> str | None:
    """None, or a non-empty text (a path, an address, a label)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise validation.InvalidValue(name, f"{name} must be a text or null, got {value!r}")
    return str(value)


def _known(name: str, value: object, registry: Registry) -> str:
    """A name the registry holds (no import paths)."""
    if not isinstance(value, str) or value not in registry:
        allowed = ", ".join(registry.names())
        raise validation.InvalidValue(name, f"{name} must be one of {allowed}, got {value!r}")
    return value


def _registered(name: str, value: object, registry: Registry) -> str:
    """A registered name or alias (stored under its registered name), or an import path."""
    try:
        registry.get(str(value))
    except ValueError as exc:
        raise validation.InvalidValue(name, str(exc)) from None
    return registry.canonical(str(value))


def _fault(name: str, value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        value = "nan"  # YAML and Hydra read a bare `nan` as the float
    return validation.one_of(name, value, FAULT_KINDS)


def _optional_count(name: str, value: object) -> int | None:
    return None if value is None else validation.positive_int(name, value, MAX_USERS)


def _model_names(name: str, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise validation.InvalidValue(
            name, "give a list of the zoo's model names, e.g. users.models=[resnet10t,levit_128s]"
        )
    return tuple(str(m) for m in value)


def listed_models(models: Sequence[str], shown: int = 8) -> str:
    """The users' models for a message: the first ``shown``, then how many users in all.

    Parameters
    ----------
    models : sequence of str
        One model name per user (``users.models``).
    shown : int, optional
        How many names to write out.

    Returns
    -------
    str
        E.g. ``"vit_small_p16, resnet10t, … (1000 users)"``.
    """
    more = f", … ({len(models)} users)" if len(models) > shown else ""
    return ", ".join(models[:shown]) + more


SUPERNODES = 64  # experiment.supernodes=null: at most this many simulated SuperNodes
MAX_SUPERNODES = 1 << 20


def _supernodes(name: str, value: object) -> int | None:
    """None (see :func:`launch.simulation.supernodes`) or a whole number in 1..2**20."""
    if value is None:
        return None
    try:
        return validation.positive_int(name, value, MAX_SUPERNODES)
    except validation.InvalidValue:
        raise validation.InvalidValue(
            name,
            f"{name} must be a whole number from 1 to {MAX_SUPERNODES:,} or null (one "
            f"SuperNode per user up to {SUPERNODES} or the local Ray's actors, whichever is "
            f"more; one per user on a Ray cluster), got {value!r}",
        ) from None


def _messages_in_flight(name: str, value: object) -> int | None:
    """None (four per simulated actor) or a whole number (0: all of a round at once)."""
    if value is None:
        return None
    try:
        return validation.whole_number(name, value)
    except validation.InvalidValue:
        raise validation.InvalidValue(
            name,
            f"{name} must be a whole number >= 0 (0: all at once) or null (four per "
            f"simulated actor), got {value!r}",
        ) from None


def _ray_address(name: str, value: object) -> str | None:
    """None (a local Ray), ``auto`` (the cluster this machine belongs to) or ``host:port``."""
    if value is None or value == "auto":
        return value
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise validation.InvalidValue(
            name,
            f"{name} must be host:port of a Ray cluster's head (as `ray start --head` prints "
            f"it), auto, or null, got {value!r}",
        )
    return str(value)


def _device(name: str, value: object) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether this machine has it is
    checked where the work runs: :func:`common.assets.devices.resolve_device`)."""
    text = value if isinstance(value, str) else ""
    kind, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and index.isdigit()):
        return text
    raise validation.InvalidValue(
        name, f"{name} must be auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps, got {value!r}"
    )


def _batch_size(name: str, value: object) -> int | None:
    return None if value is None else validation.positive_int(name, value, 1 << 20)


def _tracking_uri(name: str, value: object) -> str:
    """An MLflow tracking URI with a scheme MLflow serves; a relative ``sqlite:///`` or
    ``file:`` path is made absolute (a simulation's AP runs in another process)."""
    import os
    from urllib.parse import urlsplit

    text = str(value) if isinstance(value, str) else ""
    scheme = "databricks" if text == "databricks" else urlsplit(text).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise validation.InvalidValue(
            name,
            f"{name} must be an MLflow tracking URI with one of the schemes "
            f"{', '.join(TRACKING_SCHEMES)} (sqlite:///outputs/mlflow.db, "
            f"http://host:5000), got {value!r}",
        )
    for prefix in ("sqlite:///", "file:"):  # sqlite:///relative.db, file:relative/folder
        path = text[len(prefix) :]
        if text.startswith(prefix) and path and not path.startswith("/") and path != ":memory:":
            return prefix + os.path.abspath(path)
    return text


# ---- the sections ------------------------------------------------------------------------


def _reads(attribute: str) -> Callable[[str], bool]:
    """Whether method ``name`` reads a setting (its AP class's ``attribute``; a method of
    one's own reads every setting)."""

    def test(name: str) -> bool:
        return bool(getattr(METHODS.get(name), attribute, True))

    return test


# consensus.aggregator and trim_fraction are read by methods that combine local precoders
_CONSENSUS = Applies(
    "strategy.name", _reads("uses_aggregator"), "a consensus method (strategy=federated)"
)
UNTRIMMED = ("mean", "weighted_mean", "median")  # the registered rules that trim nothing
# faults.kind and faults.scale are read only when some user is faulty
_FAULTY = Applies("faults.users", lambda users: users > 0, "faults.users=1 or more")


_CLUSTERED = Applies("strategy.name", lambda name: name == "clustered", "strategy=clustered")


def _clusters(name: str, value: object) -> int | None:
    """None (as many groups as the grouping makes) or a whole number ≥ 1."""
    try:
        return _optional_count(name, value)
    except validation.InvalidValue:
        raise validation.InvalidValue(
            name,
            f"strategy.clusters must be a whole number from 1 to the number of users, or "
            f"null (as many groups as strategy.grouping makes), got {value!r}",
        ) from None


def _labels(name: str, value: object) -> tuple[int, ...] | None:
    """None, or a list of group labels, whole numbers ≥ 0."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise validation.InvalidValue(
            name,
            f"{name} must be a list of group labels, one per user (e.g. [0,0,1]), got {value!r}",
        )
    labels = []
    for position, label in enumerate(value):
        try:
            labels.append(validation.whole_number(name, label))
        except validation.InvalidValue:
            raise validation.InvalidValue(
                name,
                f"strategy.groups[{position}] must be a group label, a whole number >= 0, "
                f"got {label!r}",
            ) from None
    return tuple(labels)


class DataSettings(Section):
    """``data``: the dataset and the semantic pilots drawn from it."""

    name: Annotated[str, check(_known, DATASETS)] = setting(
        "the dataset, a registered loader (common.assets.data)", scope=Scope.ASSETS
    )
    root: Annotated[str | None, check(_optional_text)] = setting(
        "local folder of the dataset's files (null: the loader's default)", scope=Scope.ASSETS
    )
    split_seed: Annotated[int, check(_seed)] = setting(
        "seed of the train/test split", scope=Scope.ASSETS
    )
    pilot_fraction: Annotated[float, check(validation.fraction)] = setting(
        "share of the training split used as semantic pilots, in (0, 1]", scope=Scope.PILOTS
    )
    download: Annotated[bool, check(validation.boolean)] = setting(
        "fetch the dataset's files when they are missing (false: refuse at once)",
        scope=Scope.EXECUTION,
    )


class UserSettings(Section):
    """``users``: the zoo the users' encoders come from, and which of its models they run.

    ``models`` is resolved when the settings are made (:meth:`RunSettings.resolve_users`):
    the models to draw from are the explicit ``models`` list, or else the zoo's ``group``;
    ``count`` users (null: one per model) are drawn from them by ``assignment``, and
    ``models`` becomes one name per user and ``count`` null, so that resolved settings
    validate to themselves. Names given in a configuration must be the zoo's
    (:meth:`check_zoo`); settings made in code may name the users of their own source
    (e.g. synthetic latents).
    """

    zoo: Annotated[str, check(_known, ZOOS)] = setting(
        "the encoder zoo (embedded, paper)", scope=Scope.ASSETS
    )
    group: Annotated[str, check(_text)] = setting(
        "the zoo's group of user models (all, heterogeneous, homogeneous)", scope=Scope.RESULT
    )
    count: Annotated[int | None, check(_optional_count)] = setting(
        "how many users (null: one per model of the group or the list)", scope=Scope.RESOLVED
    )
    assignment: Annotated[str, check(validation.one_of, ASSIGNMENTS)] = setting(
        "how the count users are drawn from the models: round_robin (user k runs model "
        "k mod the number of models) or random (seeded)",
        scope=Scope.RESOLVED,
    )
    models: Annotated[tuple[str, ...] | None, check(_model_names)] = setting(
        "the models to draw the users from (null: the group's); resolved: one per user",
        scope=Scope.RESULT,
    )
    head_seed: Annotated[int, check(_seed)] = setting(
        "seed of every user's classifier head training", scope=Scope.ASSETS
    )

    def pool(self) -> tuple[str, ...]:
        """The models the users are drawn from: the explicit list, or the zoo's group."""
        if self.models is not None:
            if not self.models:
                raise validation.InvalidValue(
                    "users.models", "users.models must name at least one model, got []"
                )
            return self.models
        groups = ZOOS.get(self.zoo).groups
        if self.group not in groups:
            raise validation.InvalidValue(
                "users.group",
                f"users.group must be one of the {self.zoo} zoo's groups "
                f"{', '.join(sorted(groups))}, got {self.group!r}",
            )
        return tuple(groups[self.group])

    def assign(self, seed: int) -> tuple[str, ...]:
        """Each user's model: ``count`` users drawn from :meth:`pool` by ``assignment``.

        ``round_robin`` gives user ``k`` model ``k mod M`` (the first ``count`` models when
        ``count ≤ M``, the models in turn beyond); ``random`` draws each user's model
        uniformly, from the seed's ``ASSIGNMENT`` stream (the same in every process).
        """
        pool = self.pool()
        count = len(pool) if self.count is None else self.count
        if self.assignment == "random":
            draw = rng(seed, Stream.ASSIGNMENT).integers(len(pool), size=count)
            return tuple(pool[int(i)] for i in draw)
        return tuple(pool[k % len(pool)] for k in range(count))

    def check_zoo(self) -> None:
        """Refuse model names the zoo does not have (InvalidValue naming ``users.models``)."""
        zoo = ZOOS.get(self.zoo)
        for name in self.models:
            if name not in zoo.users:
                raise validation.InvalidValue(
                    "users.models",
                    f"users.models names unknown model {name!r}; the {self.zoo} zoo has: "
                    f"{', '.join(zoo.users)}",
                )


class CommunicationSettings(LinkConfig, ChannelConfig):
    """``communication``: the air interface of every link (:class:`LinkConfig`) and the
    channel model its ``H`` is drawn from (:class:`ChannelConfig`)."""


class StrategySettings(Section):
    """``strategy``: the method (the AP's class and its users'), its ADMM penalty, and
    how the clustered method groups users."""

    name: Annotated[str, check(_registered, METHODS)] = setting(
        "the method: a registered name (federated, multi_link, first_k, top_k, eigen_k) or "
        "package.module:Class",
        scope=Scope.RESULT,
    )
    rho: Annotated[
        float, check(validation.in_range, RHO_RANGE[0], RHO_RANGE[1], "[1e-12, 1e12]")
    ] = setting(
        "ADMM penalty ρ (scaled by the pilot count n inside the updates); beyond the range "
        "the F step over- or underflows",
        scope=Scope.RESULT,
        applies=Applies(
            "strategy.name", _reads("uses_rho"), "an ADMM method (federated, multi_link)"
        ),
    )
    clusters: Annotated[int | None, check(_clusters)] = setting(
        "the number of groups C of the clustered method, 1..K (null: as many as the "
        "grouping makes; kmeans needs 2..K)",
        scope=Scope.RESULT,
        applies=_CLUSTERED,
        neutral=None,
    )
    grouping: Annotated[str, check(validation.one_of, GROUPINGS)] = setting(
        "how the clustered method groups users: model (one group per encoder), kmeans "
        "(k-means on the users' local precoders after round 1) or given (strategy.groups)",
        scope=Scope.RESULT,
        applies=_CLUSTERED,
        neutral="model",
    )
    groups: Annotated[tuple[int, ...] | None, check(_labels)] = setting(
        "grouping=given: each user's group, a list of K labels 0..C-1, every label used",
        scope=Scope.RESULT,
        applies=(
            _CLUSTERED,
            Applies("strategy.grouping", lambda rule: rule == "given", "strategy.grouping=given"),
        ),
        neutral=None,
    )
    regroup_every: Annotated[int, check(validation.whole_number)] = setting(
        "grouping=kmeans: re-cluster every this many rounds after round 1 (0: never)",
        scope=Scope.RESULT,
        applies=(
            _CLUSTERED,
            Applies("strategy.grouping", lambda rule: rule == "kmeans", "strategy.grouping=kmeans"),
        ),
        neutral=0,
    )

    def grouping_of(self, models: Sequence[str]) -> Grouping:
        """The grouping these settings describe, for users running ``models``."""
        return Grouping(
            rule=self.grouping,
            clusters=self.clusters,
            labels=self.groups,
            regroup_every=self.regroup_every,
            models=tuple(models),
        )

    def group_sizes(self, num_users: int, models: Sequence[str]) -> list[int]:
        """How many users each group holds (``kmeans``: an even split of the users, as
        far as it goes); the grouping is assumed valid (:meth:`check_groups`)."""
        if self.grouping == "kmeans":
            return [num_users // (self.clusters or 1)] * (self.clusters or 1)
        labels = list(self.grouping_of(models).initial(range(num_users)).values())
        return [labels.count(c) for c in sorted(set(labels))]

    def check_groups(self, num_users: int, models: Sequence[str], participation: float) -> None:
        """Refuse a grouping that cannot group ``num_users`` users (clustered only).

        Raises
        ------
        common.maths.validation.InvalidValue
            ``clusters`` above the users, ``kmeans`` without 2 clusters or more than a
            round trains with (``⌈participation · K⌉``), a ``groups`` list of another
            length or with an empty group, or ``clusters`` that differs from the groups
            ``model`` or ``given`` make.
        """
        if self.name != "clustered":
            return
        c = self.clusters
        if c is not None and c > num_users:
            raise validation.InvalidValue(
                "strategy.clusters",
                f"strategy.clusters must be at most the number of users ({num_users}), got {c}",
            )
        if self.grouping == "kmeans":
            if c is None or c < 2:
                raise validation.InvalidValue(
                    "strategy.clusters",
                    f"strategy.grouping=kmeans needs strategy.clusters from 2 to {num_users} "
                    f"(the number of users), got {'null' if c is None else c}"
                    + ("; one group is strategy=federated" if c == 1 else ""),
                )
            per_round = max(1, math.ceil(participation * num_users))
            if c > per_round:
                raise validation.InvalidValue(
                    "strategy.clusters",
                    f"strategy.grouping=kmeans clusters the users of one round: "
                    f"strategy.clusters={c} needs at least {c} of them, and "
                    f"consensus.participation={participation:g} trains with {per_round} of "
                    f"{num_users}; allowed: 2 to {per_round}",
                )
            return
        if self.grouping == "given":
            labels = self.groups
            if labels is None or len(labels) != num_users:
                got = "none" if labels is None else f"{len(labels)} labels"
                raise validation.InvalidValue(
                    "strategy.groups",
                    f"strategy.grouping=given needs strategy.groups, one label per user "
                    f"({num_users}), got {got}",
                )
            made = max(labels) + 1 if c is None else c
            empty = sorted(set(range(made)) - set(labels))
            if empty or max(labels) >= made:
                what = (
                    f"no user in group(s) {', '.join(map(str, empty[:8]))}"
                    if empty
                    else f"label {max(labels)} is not below strategy.clusters={c}"
                )
                raise validation.InvalidValue(
                    "strategy.groups",
                    f"strategy.groups must use every label 0..{made - 1}, each at least "
                    f"once: {what}",
                )
        else:
            made = len(set(models))
        if c is not None and c != made:
            raise validation.InvalidValue(
                "strategy.clusters",
                f"strategy.grouping={self.grouping} makes {made} groups, got "
                f"strategy.clusters={c}; leave it null or give {made}",
            )


POLICIES = ("none", "equalizer", "full")  # tracking.policy: how the alignment is kept on track
# the deployment phase's keys are read only when it has slots, the refresh's under a policy
_DEPLOYED = Applies("tracking.slots", lambda slots: slots > 0, "tracking.slots=1 or more")
_REFRESHED = Applies(
    "tracking.policy", lambda policy: policy != "none", "tracking.policy=equalizer or full"
)


def _slot_count(name: str, value: object) -> int:
    count = validation.whole_number(name, value)
    if count > MAX_ROUNDS:
        raise validation.InvalidValue(
            name, f"{name} must be a whole number in 0..{MAX_ROUNDS:,}, got {value!r}"
        )
    return count


def _optional_pilots(name: str, value: object) -> int | None:
    return None if value is None else validation.positive_int(name, value)


class TrackingSettings(Section):
    """``tracking``: a deployment phase after training, over a channel that moves, and how
    the alignment is kept on track in it (docs/ALGORITHM.md, §6, *Channels that move*).

    Training sees the channel at ``t = 0``; slot ``s = 1..slots`` decodes the test set
    over the channel at ``t_s = train_time + (s − 1)·slot_duration``. Under a policy, a
    refresh opens slots ``1, 1 + every, 1 + 2·every, …``: the users re-fit ``G_k`` on
    ``pilots`` of the pilots last sent (``equalizer``), or the AP and users run ``rounds``
    warm-started ADMM rounds on all of them (``full``), over that slot's channel.
    """

    slots: Annotated[int, check(_slot_count)] = setting(
        "deployment slots after training (0: no deployment phase), at most 100,000",
        scope=Scope.RESULT,
        neutral=0,
    )
    slot_duration: Annotated[float, check(validation.positive_float)] = setting(
        "the time between two slots (each decodes over the channel at its start)",
        unit="s",
        scope=Scope.RESULT,
        applies=_DEPLOYED,
        neutral=0.01,
    )
    train_time: Annotated[float, check(validation.in_range, 0, math.inf, "[0, inf) seconds")] = (
        setting(
            "from the training channel (t = 0) to the first slot",
            unit="s",
            scope=Scope.RESULT,
            applies=_DEPLOYED,
            neutral=0.0,
        )
    )
    policy: Annotated[str, check(validation.one_of, POLICIES)] = setting(
        "none (F, G_k as trained), equalizer (the users re-fit G_k on fresh pilots) or full "
        "(warm-started ADMM rounds on fresh pilots)",
        scope=Scope.RESULT,
        applies=_DEPLOYED,
        neutral="none",
    )
    every: Annotated[int, check(validation.positive_int, MAX_ROUNDS)] = setting(
        "a refresh every this many slots (opening slot 1, 1 + every, ...)",
        scope=Scope.RESULT,
        applies=(_DEPLOYED, _REFRESHED),
        neutral=1,
    )
    pilots: Annotated[int | None, check(_optional_pilots)] = setting(
        "pilots an equalizer refresh sends, at most the pilot set (null: all of them)",
        scope=Scope.RESULT,
        applies=(
            _DEPLOYED,
            Applies("tracking.policy", lambda p: p == "equalizer", "tracking.policy=equalizer"),
        ),
        neutral=None,
    )
    rounds: Annotated[int, check(validation.positive_int, MAX_ROUNDS)] = setting(
        "warm-started ADMM rounds per full refresh",
        scope=Scope.RESULT,
        applies=(
            _DEPLOYED,
            Applies("tracking.policy", lambda p: p == "full", "tracking.policy=full"),
        ),
        neutral=1,
    )

    def check_pilots(self, n_pilots: int) -> None:
        """Refuse ``pilots`` beyond the pilot set of ``n_pilots`` (known once the data are).

        Raises
        ------
        ConfigError
            ``tracking.pilots`` is larger than ``n_pilots`` (with a deployment phase).
        """
        if self.slots and self.pilots is not None and self.pilots > n_pilots:
            raise ConfigError(
                f"config key 'tracking.pilots' = {self.pilots} is invalid: it must be at most "
                f"the pilot set's {n_pilots} pilots (data.pilot_fraction), or null for all "
                "of them"
            )

    def refreshes(self, slot: int) -> bool:
        """Whether a refresh opens deployment slot ``slot`` (1-based)."""
        return self.policy != "none" and (slot - 1) % self.every == 0

    def refresh_rounds(self, slot: int) -> int:
        """The ``full`` refresh rounds that open ``slot`` (0 under another policy, or in a
        slot no refresh opens)."""
        return self.rounds if self.policy == "full" and self.refreshes(slot) else 0

    def plan(self) -> tuple[tuple[int, int], ...]:
        """What a transport runs: each slot with the ``full`` refresh rounds opening it."""
        return tuple((slot, self.refresh_rounds(slot)) for slot in range(1, self.slots + 1))

    def time(self, slot: int) -> float:
        """``t_s``, s: when slot ``slot`` (1-based) decodes, from the training channel."""
        return self.train_time + (slot - 1) * self.slot_duration


class ConventionSettings(Section):
    """``conventions``: the algorithm as docs/ALGORITHM.md writes it, or the paper code's."""

    name: Annotated[str, check(validation.one_of, CONVENTION_NAMES)] = setting(
        "corrected (docs/ALGORITHM.md) or paper (the published code's conventions)",
        scope=Scope.RESULT,
    )


class ConsensusSettings(Section):
    """``consensus``: how the AP combines the users' local precoders, and who trains."""

    aggregator: Annotated[str, check(_registered, AGGREGATORS)] = setting(
        "consensus rule: mean, weighted_mean, median, trimmed_mean or package.module:Class",
        scope=Scope.RESULT,
        applies=_CONSENSUS,
    )
    trim_fraction: Annotated[
        float, check(validation.in_range, 0, 0.5, "[0, 0.5)", upper_open=True)
    ] = setting(
        "share of users cut at each end by trimmed_mean, in [0, 0.5)",
        scope=Scope.RESULT,
        applies=(
            _CONSENSUS,
            Applies(
                "consensus.aggregator",
                lambda rule: rule not in UNTRIMMED,
                "consensus.aggregator=trimmed_mean (or a rule of your own)",
            ),
        ),
    )
    participation: Annotated[float, check(validation.fraction)] = setting(
        "share of users the AP trains with in each round, sampled afresh, in (0, 1]",
        scope=Scope.RESULT,
    )


class FaultSettings(Section):
    """``faults``: fault injection, users ``0..users-1`` corrupt every uplink they send."""

    users: Annotated[int, check(validation.whole_number)] = setting(
        "how many users send corrupted uplinks (users 0..users-1)", scope=Scope.RESULT
    )
    kind: Annotated[str, check(_fault)] = setting(
        "how they corrupt it: scaled (x scale), random (noise, scale x the uplink's RMS), nan",
        scope=Scope.RESULT,
        applies=_FAULTY,
    )
    scale: Annotated[float, check(validation.positive_float)] = setting(
        "the corruption's factor",
        scope=Scope.RESULT,
        applies=(
            _FAULTY,
            Applies("faults.kind", lambda kind: kind != "nan", "faults.kind=scaled or random"),
        ),
    )


class ExperimentSettings(Section):
    """``experiment``: the schedule, and how a run is executed and waited for."""

    rounds: Annotated[int, check(validation.positive_int, MAX_ROUNDS)] = setting(
        "ADMM rounds (methods in closed form train in one)", scope=Scope.RESULT
    )
    cpus_per_user: Annotated[float, check(validation.positive_float)] = setting(
        "Ray CPUs per simulated user", scope=Scope.EXECUTION
    )
    gpus_per_user: Annotated[float, check(validation.in_range, 0, 64, "[0, 64]")] = setting(
        "Ray GPUs per simulated user (a fraction shares one GPU; 0: none)",
        scope=Scope.EXECUTION,
    )
    progress: Annotated[bool, check(validation.boolean)] = setting(
        "print a line per round", scope=Scope.EXECUTION
    )
    node_timeout: Annotated[float, check(validation.positive_float)] = setting(
        "wait for every user's node to join: this", unit="s", scope=Scope.EXECUTION
    )
    node_timeout_per_user: Annotated[
        float, check(validation.in_range, 0, 3600, "[0, 3600] seconds")
    ] = setting("... plus this per user", unit="s", scope=Scope.EXECUTION)
    round_timeout: Annotated[float, check(validation.positive_float)] = setting(
        "wait for a round's replies until a round has completed (and at most)",
        unit="s",
        scope=Scope.EXECUTION,
    )
    round_timeout_factor: Annotated[
        float, check(validation.in_range, 0, 1e6, "[0, 1e6] (0: always round_timeout)")
    ] = setting(
        "then at most this times the slowest complete round (at least 60 s)",
        scope=Scope.EXECUTION,
    )
    supernodes: Annotated[int | None, check(_supernodes)] = setting(
        "simulated SuperNodes (null: one per user up to 64 or the local Ray's actors, "
        "whichever is more; on a Ray cluster one per user); node p serves the users k "
        "with k mod supernodes = p",
        scope=Scope.EXECUTION,
    )
    messages_in_flight: Annotated[int | None, check(_messages_in_flight)] = setting(
        "a simulated round's messages in Flower's link state at once (0: all at once; "
        "null: four per simulated actor)",
        scope=Scope.EXECUTION,
    )
    allow_partial: Annotated[bool, check(validation.boolean)] = setting(
        "accept a run in which some user failed permanently", scope=Scope.EXECUTION
    )
    max_failed_fraction: Annotated[float, check(validation.fraction)] = setting(
        "a user failing in more of the training rounds failed permanently",
        scope=Scope.EXECUTION,
    )
    resume: Annotated[bool, check(validation.boolean)] = setting(
        "continue an interrupted run from the checkpoint in its output folder",
        scope=Scope.EXECUTION,
    )
    ray_address: Annotated[str | None, check(_ray_address)] = setting(
        "an existing Ray cluster to simulate on (host:port or auto; null: a local Ray)",
        scope=Scope.EXECUTION,
    )


class LatentSettings(Section):
    """``latents``: how encoders turn images into latents (on ``device``)."""

    precision: Annotated[str, check(validation.one_of, PRECISIONS)] = setting(
        "the extraction's arithmetic: fp32, or bf16/fp16 under autocast (faster on a GPU; "
        "latents differ in the third digit, so they are cached apart)",
        scope=Scope.ASSETS,
        neutral="fp32",
    )
    batch_size: Annotated[int | None, check(_batch_size)] = setting(
        "images per forward pass (null: 256 on a CPU, from the free memory on a GPU)",
        scope=Scope.EXECUTION,
    )


_TRACKED = Applies("logger.name", lambda name: name != "none", "logger=mlflow|tensorboard|wandb")
_MLFLOW = Applies("logger.name", lambda name: name == "mlflow", "logger=mlflow")
_MLFLOW_OR_WANDB = Applies(
    "logger.name", lambda name: name in ("mlflow", "wandb"), "logger=mlflow or logger=wandb"
)


class LoggerSettings(Section):
    """``logger``: the experiment tracker the AP also logs each run to (the run's own
    tables are written either way)."""

    name: Annotated[str, check(validation.one_of, TRACKERS)] = setting(
        "none, mlflow, tensorboard or wandb", scope=Scope.EXECUTION
    )
    uri: Annotated[str, check(_tracking_uri)] = setting(
        "MLflow tracking URI: a SQL store (sqlite:///outputs/mlflow.db) or a tracking server",
        scope=Scope.EXECUTION,
        applies=_MLFLOW,
    )
    experiment: Annotated[str, check(_text)] = setting(
        "the MLflow experiment, or the W&B project, the runs go to",
        scope=Scope.EXECUTION,
        applies=_MLFLOW_OR_WANDB,
    )
    mode: Annotated[str, check(validation.one_of, ("offline", "online"))] = setting(
        "W&B: offline (under the run folder; wandb sync later) or online",
        scope=Scope.EXECUTION,
        applies=Applies("logger.name", lambda name: name == "wandb", "logger=wandb"),
    )
    run_name: Annotated[str | None, check(_optional_text)] = setting(
        "the tracked run's name (null: its overrides)", scope=Scope.EXECUTION, applies=_TRACKED
    )
    parent: Annotated[str | None, check(_optional_text)] = setting(
        "the MLflow parent run id or W&B group the run belongs to (a sweep sets it)",
        scope=Scope.EXECUTION,
        applies=_MLFLOW_OR_WANDB,
    )


class PaperKeys(Section):
    """``base_station``: the paper code's names for the method; when set they decide
    ``strategy.name`` (``strategy`` wins over ``status``) and are then cleared."""

    status: Annotated[str | None, check(_optional_text)] = setting(
        "shared | multi-link", scope=Scope.EXECUTION
    )
    strategy: Annotated[str | None, check(_optional_text)] = setting(
        "First-K | Top-K", scope=Scope.EXECUTION
    )


# ---- the whole --------------------------------------------------------------------------


class RunSettings(Section):
    """Everything one experiment needs to know; the same JSON reaches every party.

    Sections mirror the ``conf/`` groups; read a setting as
    ``settings.communication.channel_uses`` (config key
    ``communication.channel_usage``). ``link`` is the communication section as the
    link's parameters (a :class:`LinkConfig`).

    Raises
    ------
    ConfigError
        From :meth:`from_config`, :meth:`from_json` and :meth:`replace`: a key is
        missing or unknown, or a value is refused (the message names the dotted key,
        the value and what is allowed).
    """

    strategy: StrategySettings
    data: DataSettings
    users: UserSettings
    communication: CommunicationSettings
    csi: CsiConfig
    conventions: ConventionSettings
    consensus: ConsensusSettings
    faults: FaultSettings
    experiment: ExperimentSettings
    tracking: TrackingSettings
    logger: LoggerSettings
    latents: LatentSettings
    device: Annotated[str, check(_device)] = setting(
        "where latents are extracted: auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N "
        "or mps (training stays on the CPU)",
        scope=Scope.EXECUTION,
    )
    seed: Annotated[int, check(_seed)] = setting(
        "seed of every random draw (pilots, channels, initial F, sampling)", scope=Scope.PILOTS
    )
    cache_dir: Annotated[str | None, check(_optional_text)] = setting(
        "where encoders, latents and heads are cached (null: $FEDALIGN_CACHE or the user "
        "cache folder)",
        scope=Scope.LOCATION,
    )
    weights_dir: Annotated[str | None, check(_optional_text)] = setting(
        "local pretrained weights of the paper zoo, <model>.safetensors/.pth",
        scope=Scope.ASSETS,
    )
    sweep_store: Annotated[str | None, check(_optional_text)] = setting(
        "where a sweep keeps each finished point (null: compute every point afresh)",
        scope=Scope.EXECUTION,
    )
    sweep_in_flight: Annotated[int, check(validation.positive_int)] = setting(
        "how many points of a sweep share each Flower round", scope=Scope.EXECUTION
    )
    simulation: Annotated[str | None, check(_optional_text)] = setting(
        "a label for the experiment, as in the paper's code; changes no number",
        scope=Scope.EXECUTION,
    )
    base_station: PaperKeys

    @model_validator(mode="before")
    @classmethod
    def _paper_keys(cls, data: Any) -> Any:
        """``base_station.strategy`` / ``status`` decide ``strategy.name``, then clear."""
        if not isinstance(data, Mapping):
            return data
        paper = data.get("base_station")
        if not isinstance(paper, Mapping):
            return data
        for key in ("strategy", "status"):
            value = paper.get(key)
            if value in (None, ""):
                continue
            name = f"base_station.{key}"
            _registered(name, value, METHODS)
            strategy = data.get("strategy")
            strategy = dict(strategy) if isinstance(strategy, Mapping) else {}
            strategy["name"] = METHODS.canonical(str(value))
            return {
                **data,
                "strategy": strategy,
                "base_station": {"status": None, "strategy": None},
            }
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunSettings:
        self.resolve_users()
        self.strategy.check_groups(self.num_users, self.users.models, self.consensus.participation)
        if self.faults.users > self.num_users:
            raise validation.InvalidValue(
                "faults.users",
                f"faulty_users must be at most the number of users ({self.num_users}), "
                f"got {self.faults.users}",
            )
        self._check_trimming()
        link = self.communication
        if link.model in THREE_GPP and link.fft_size < link.channel_uses:
            raise validation.InvalidValue(
                "communication.fft_size",
                f"communication.fft_size must be at least communication.channel_usage "
                f"(u = {link.channel_uses}: each use on its own subcarrier), got {link.fft_size}",
            )
        method = METHODS.get(self.strategy.name)
        if self.tracking.slots and self.csi.ageing < 1:
            raise validation.InvalidValue(
                "csi.ageing",
                f"csi.ageing must be 1 with a deployment phase (tracking.slots="
                f"{self.tracking.slots}), whose slots see the channel evolve in time "
                f"(communication.speed) instead of aged once; got {self.csi.ageing}",
            )
        if self.tracking.slots and not method.user_class.SLOT_KIND:
            raise validation.InvalidValue(
                "tracking.slots",
                f"a deployment phase needs an ADMM method (federated, multi_link, clustered), "
                f"whose users decode with an equalizer; {self.strategy.name} has none, got "
                f"tracking.slots={self.tracking.slots}",
            )
        if self.consensus.participation < 1 and method.rounds_for(self.experiment.rounds) == 1:
            raise validation.InvalidValue(
                "consensus.participation",
                f"participation below 1 needs an iterative method; {self.strategy.name} trains "
                f"in one round, got {self.consensus.participation}",
            )
        return self

    def _check_trimming(self) -> None:
        """A trimming rule that would cut no user of a full round is refused (it would be
        the plain mean, silently)."""
        c = self.consensus
        if c.aggregator in UNTRIMMED or not getattr(
            METHODS.get(self.strategy.name), "uses_aggregator", True
        ):
            return
        rule = AGGREGATORS.get(c.aggregator, subclass_of=Aggregator)
        if rule.trimmed is Aggregator.trimmed:  # a rule that never trims
            return
        count = max(1, math.ceil(c.participation * self.num_users))  # Session.participants
        where = "a round trains with"
        if self.strategy.name == "clustered":  # the rule runs within each group
            sizes = self.strategy.group_sizes(self.num_users, self.users.models)
            count = max(1, math.ceil(c.participation * min(sizes)))
            where = "the smallest group (of the users a round trains with) holds"
            if self.strategy.grouping == "kmeans":
                where = "a group holds when k-means splits a round evenly"

        def cut(beta: float) -> int:  # built as the run builds it (Session's aggregator())
            options = {**c.model_dump(exclude={"aggregator"}), "trim_fraction": beta}
            try:
                return aggregator(c.aggregator, **options).trimmed(count)
            except TypeError as exc:
                raise validation.InvalidValue(
                    "consensus.aggregator",
                    f"consensus.aggregator {c.aggregator!r} cannot be built from the "
                    f"consensus settings: {exc}",
                ) from None

        if cut(c.trim_fraction) > 0:
            return
        least = next((b / 1000 for b in range(1, 500) if cut(b / 1000)), None)
        allowed = (
            f"allowed with {count}: [{least}, 0.5)"
            if least is not None
            else "trimming needs at least 3 users in a round"
        )
        raise validation.InvalidValue(
            "consensus.trim_fraction",
            f"{c.aggregator} with trim_fraction {c.trim_fraction} cuts no user of the "
            f"{count} {where} (⌊{c.trim_fraction}·{count}⌋ = 0 at each end): "
            f"it would be the plain mean; {allowed}",
        )

    def resolve_users(self) -> None:
        """Give every user its model (:meth:`UserSettings.assign`), once: ``users.models``
        becomes one name per user, ``users.count`` null and ``users.assignment``
        ``round_robin`` (the names say it all), so that resolved settings validate to
        themselves and equal users name equal points."""
        users = self.users
        if users.count is None and users.models is not None and users.assignment == "round_robin":
            if not users.models:
                users.pool()  # refuses the empty list, naming the key
            return
        object.__setattr__(users, "models", users.assign(self.seed))
        object.__setattr__(users, "count", None)
        object.__setattr__(users, "assignment", "round_robin")

    # ---- derived -------------------------------------------------------------------------
    @property
    def link(self) -> LinkConfig:
        """The communication section as the link's parameters."""
        return self.communication

    @property
    def num_users(self) -> int:
        return len(self.users.models)

    @property
    def node_wait(self) -> float:
        """Seconds to wait for every user's node to join: in proportion to the users."""
        e = self.experiment
        return e.node_timeout + e.node_timeout_per_user * self.num_users

    @classmethod
    def keys(cls, include: Callable[[Scope], bool] = lambda scope: True) -> list[str]:
        """The dotted config keys of the settings whose scope passes ``include``."""
        return [key for key, owner, name in leaves(cls) if include(scope_of(owner, name))]

    def identity(self, include: Callable[[Scope], bool] = _changes_results) -> dict:
        """The settings whose scope passes ``include``, as a nested dict by config key
        (default: every setting that changes the numbers, a sweep point's identity)."""
        out: dict = {}
        neutral = _neutral_values()
        for key in self.keys(include):
            if neutral[key] is not NEVER and self.get(key) == neutral[key]:
                continue  # as before the setting existed: stored points keep their names
            node = out
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = _jsonable(self.get(key))
        return out

    def get(self, key: str) -> Any:
        """The value of a dotted config key (``"communication.channel_usage"``)."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, _field_name(type(node), part))
        return node

    # ---- making and changing -------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RunSettings:
        """Validate a composed config (a plain nested mapping; Hydra's own ``hydra`` node
        is ignored); the users' models must be the zoo's."""
        settings = cls._validated(cfg)
        try:
            settings.users.check_zoo()
        except validation.InvalidValue as exc:
            raise ConfigError(
                f"config key {exc.name!r} = {_lookup(cfg, exc.name)!r} is invalid: {exc}"
            ) from None
        return settings

    @classmethod
    def _validated(cls, cfg: Mapping[str, Any]) -> RunSettings:
        plain = {k: v for k, v in cfg.items() if k != "hydra"}
        try:
            return cls.model_validate(plain)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, plain)) from None

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some settings changed, validated as a whole.

        Name each setting by its dotted config key (pass them as
        ``**{"communication.channel_usage": 2}``), a top-level key (``seed=3``), or a
        field name that only one section has (``channel_uses=2``, ``rho=2.0``).
        """
        data = self.model_dump(by_alias=True)
        for name, value in changes.items():
            key = _config_key(name)
            if isinstance(data.get(key), dict) and not isinstance(value, Mapping):
                raise ConfigError(
                    f"{key!r} is a section: name one of its settings "
                    f"({', '.join(k for k in _all_keys() if k.startswith(key + '.'))})"
                )
            node = data
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        named = {_config_key(k) for k in changes}
        if "users.models" in named and "users.count" not in named:
            data["users"]["count"] = None  # the list names every user
        return type(self)._validated(data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        """Settings written by :meth:`to_json` (every setting; see :func:`stored_identity`
        for settings stored by earlier versions)."""
        return cls._validated(json.loads(text))


def _neutral_values() -> dict[str, Any]:
    """Each setting's value at which it is left out of identities (:data:`NEVER`: none)."""
    return {key: neutral_of(owner, name) for key, owner, name in leaves(RunSettings)}


def stored_identity(text: str) -> dict:
    """The settings that change the numbers (:meth:`RunSettings.identity`) as a stored JSON
    holds them: written by :meth:`RunSettings.to_json` of this or an earlier version, the
    flat layout before the sections included. A setting newer than the text is left out
    (a checkpoint without it is refused on resume; a stored point's key lacks it).

    Raises
    ------
    ValueError
        The text is not JSON, or not the settings of a run.
    """
    raw = json.loads(text)
    if not isinstance(raw, Mapping) or not ({"link", "communication"} & set(raw)):
        raise ValueError("not the settings of a run (no link or communication section)")
    if "link" in raw and "communication" not in raw:
        raw = _from_flat(raw)
    out: dict = {}
    neutral = _neutral_values()
    for key in RunSettings.keys(_changes_results):
        node, value = raw, None
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            value = node
            if neutral[key] is not NEVER and value == neutral[key]:
                continue  # left out of identities at this value (RunSettings.identity)
            target = out
            *parents, last = key.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = _jsonable(value)
    return out


def not_in_effect(settings: RunSettings, keys: Sequence[str]) -> dict[str, str]:
    """Which of ``keys`` the run does not read (an option-specific setting whose option is
    not selected, :class:`~common.schema.Applies`), each with why.

    Returns
    -------
    dict of str to str
        Config key → ``"with communication.model='rayleigh': it is read only with
        channel=correlated"``; empty when every key is read.
    """
    owners = {key: (owner, name) for key, owner, name in leaves(RunSettings)}
    out = {}
    for key in keys:
        for condition in applies_of(*owners[key]) if key in owners else ():
            value = settings.get(condition.key)
            if not condition.test(value):
                out[key] = f"with {condition.key}={value!r}: it is read only with {condition.needs}"
                break
    return out


def refuse_unused(points: Sequence[tuple[Sequence[str], RunSettings]]) -> None:
    """Refuse a setting given explicitly that no point of a run or sweep reads.

    A sweep may cross a method with another's setting (``consensus.aggregator=mean,
    trimmed_mean consensus.trim_fraction=0.1``): a key is refused only when no point that
    sets it reads it.

    Parameters
    ----------
    points : sequence of (keys, RunSettings)
        Each point's explicitly set config keys (``conf.override_keys`` of its Hydra
        overrides) and validated settings.

    Raises
    ------
    ConfigError
        Naming the key, its value, the setting that makes it unread and what would make it
        read (``communication.correlation=0.9 has no effect with
        communication.model='rayleigh': it is read only with channel=correlated``).
    """
    unread: dict[str, tuple[RunSettings, str]] = {}
    read: set[str] = set()
    for keys, settings in points:
        why = not_in_effect(settings, keys)
        read.update(key for key in keys if key not in why)
        for key, reason in why.items():
            unread.setdefault(key, (settings, reason))
    for key, (settings, reason) in unread.items():
        if key not in read:
            where = " in any point of the sweep" if len(points) > 1 else ""
            raise ConfigError(
                f"config key {key!r} = {_jsonable(settings.get(key))!r} has no effect{where} "
                f"{reason}"
            )


def settings_from_config(cfg: Mapping[str, Any]) -> RunSettings:
    """Validate a composed config (plain nested mapping) into :class:`RunSettings`."""
    return RunSettings.from_config(cfg)


# ---- keys, names and messages -----------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _field_name(section: type[Section], key: str) -> str:
    """The field of ``section`` read from config key ``key`` (alias or name)."""
    for name, field in section.model_fields.items():
        if key in (name, field.alias):
            return name
    raise KeyError(key)


def _index() -> dict[str, list[str]]:
    """Every name a setting can be called by (its key, its last part, its field name)."""
    names: dict[str, list[str]] = {}
    for key, _, field in leaves(RunSettings):
        # the deployment phase's keys go by their full names (tracking.rounds is not
        # experiment.rounds)
        short = () if key.startswith("tracking.") else (key.rsplit(".", 1)[-1], field)
        for name in {key, *short}:
            names.setdefault(name, []).append(key)
    for key in RunSettings.model_fields:
        names.setdefault(key, [key])
    return names


def _config_key(name: str) -> str:
    """The dotted config key ``name`` stands for (itself, or a unique field name)."""
    keys = sorted(set(_index().get(name, [])))
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise ConfigError(f"{name!r} is not a setting; the settings are {', '.join(_all_keys())}")
    raise ConfigError(f"{name!r} is ambiguous: name one of {', '.join(keys)}")


def _all_keys() -> list[str]:
    return [key for key, _, _ in leaves(RunSettings)]


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _first_leaf(prefix: str) -> str:
    """A missing section is reported by its first key."""
    return next((k for k in _all_keys() if k.startswith(prefix + ".")), prefix)


def _explain(exc: ValidationError, cfg: Mapping[str, Any]) -> str:
    """One line for the first problem: the dotted key, the value and what is allowed."""
    unknown = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        known = _all_keys()
        by_field = {
            (f"{key.rsplit('.', 1)[0]}." if "." in key else "") + field: key
            for key, _, field in leaves(RunSettings)
        }
        hints = [
            by_field.get(key) or next(iter(difflib.get_close_matches(key, known, n=1)), None)
            for key in unknown
        ]
        hints = [hint for hint in hints if hint]
        hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        return (
            f"config key(s) {', '.join(repr(k) for k in unknown)} are not read by any part of "
            f"the program (a typo, or a '+key=' addition?){hint} The keys live in conf/*.yaml"
        )
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, validation.InvalidValue) and "." in cause.name:
        key = cause.name  # a check across settings names the key it is about
    if error["type"] == "missing":
        return f"config key {_first_leaf(key)!r} is missing: compose the config from conf/"
    message = str(cause) if cause is not None else error["msg"]
    return f"config key {key!r} = {_lookup(cfg, key)!r} is invalid: {message}"


# The flat layout of settings written before the sections (checkpoints, sweep stores):
# each old field and the config key it became. Frozen: new settings never appear here.
_FLAT = {
    "dataset": "data.name",
    "data_root": "data.root",
    "split_seed": "data.split_seed",
    "pilot_fraction": "data.pilot_fraction",
    "zoo": "users.zoo",
    "group": "users.group",
    "models": "users.models",
    "head_seed": "users.head_seed",
    "method": "strategy.name",
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
    "conventions": "conventions.name",
    "aggregator": "consensus.aggregator",
    "trim_fraction": "consensus.trim_fraction",
    "participation": "consensus.participation",
    "faulty_users": "faults.users",
    "fault": "faults.kind",
    "fault_scale": "faults.scale",
    "link.antennas_tx": "communication.antennas_transmitter",
    "link.antennas_rx": "communication.antennas_receiver",
    "link.channel_uses": "communication.channel_usage",
    "link.snr_db": "communication.snr",
    "link.power": "communication.power",
    "channel.model": "communication.model",
    "channel.correlation": "communication.correlation",
    "channel.k_factor": "communication.k_factor",
    "channel.coherence_uses": "communication.coherence_uses",
    "channel.estimation": "csi.estimation",
    "channel.csi_snr_db": "csi.snr",
    "channel.ageing": "csi.ageing",
}


def _from_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Settings in the flat layout of earlier versions, as a nested config (its ``models``
    were resolved: no ``count``)."""
    values: dict[str, Any] = {"users.count": None}
    for name, value in flat.items():
        if isinstance(value, Mapping):
            values.update({_FLAT[f"{name}.{k}"]: v for k, v in value.items()})
        else:
            values[_FLAT[name]] = value
    nested: dict[str, Any] = {}
    for key, value in values.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested

"""What a user device runs, from its SuperNode's node config.

A device knows its own model and data, not the run's whole user group. Its
SuperNode is started with::

    --node-config 'partition-id=1 model="resnet10t" cache-dir="/data/fedalign"'

``partition-id`` is the user's index in the run, ``model`` the encoder the
device runs and ``cache-dir`` the folder where ``python -m launch.assets user``
put that encoder's latents and classifier head (``weights-dir`` and
``data-root`` optionally name local pretrained weights and the dataset's
folder). What the device needs of the others is only the shared pilot set's
identity, which every message carries in the run's settings: the dataset, its
split seed, the pilot fraction and the seed, plus the zoo and head seed that
name its built assets.

A simulated node has only ``partition-id`` and Flower's ``num-partitions``: it
reads the run's shared cache, as every party of a simulation does, and serves
every user ``k`` with ``k mod num-partitions == partition-id`` (one user when a
simulation has a SuperNode per user; several when it has fewer SuperNodes than
users, ``experiment.supernodes``). A node with neither a model nor
``num-partitions`` is refused.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from common.run.settings import RunSettings, listed_models
from common.run.sources import ProblemSource

PARTITION, MODEL, CACHE, WEIGHTS, DATA_ROOT = (
    "partition-id",
    "model",
    "cache-dir",
    "weights-dir",
    "data-root",
)
NODE_KEYS = (PARTITION, MODEL, CACHE, WEIGHTS, DATA_ROOT, "num-partitions")


class DeviceConfigError(ValueError):
    """A node config that cannot serve the run; the message names the key and value."""


def identity_overrides(settings: RunSettings) -> str:
    """The overrides that name a run's shared pilot set and a device's built assets."""
    return shlex.join(
        [
            f"data={settings.data.name}",
            f"data.split_seed={settings.data.split_seed}",
            f"users.zoo={settings.users.zoo}",
            f"users.head_seed={settings.users.head_seed}",
        ]
    )


def assets_command(model: str, cache_dir: str, settings: RunSettings) -> str:
    """The command that builds a device's assets for runs like ``settings``."""
    return (
        f"python -m launch.assets user --model {shlex.quote(model)} --cache-dir "
        f"{shlex.quote(cache_dir)} {identity_overrides(settings)}"
    )


def _text(config: Mapping[str, object], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DeviceConfigError(f"node config {key}={value!r} must be a non-empty string")
    return value


@dataclass(frozen=True)
class Device:
    """One user device: its index in the run, and (deployed) its model and asset folders."""

    index: int
    model: str | None = None
    cache_dir: str | None = None
    weights_dir: str | None = None
    data_root: str | None = None
    partitions: int | None = None  # a simulated node's num-partitions (None: deployed)

    def users(self, num_users: int) -> list[int]:
        """The users this node serves in a run of ``num_users``: a deployed device its
        ``partition-id``; a simulated node every ``k`` with ``k mod num-partitions ==
        partition-id`` (so the users of a smaller point of a sweep are a subset)."""
        if self.partitions is None:
            return [self.index] if self.index < num_users else []
        return list(range(self.index, num_users, self.partitions))

    def serves(self, user: int, num_users: int) -> bool:
        """Whether ``user`` of a run of ``num_users`` is one of :meth:`users`."""
        if not 0 <= user < num_users:
            return False
        if self.partitions is None:
            return user == self.index
        return user % self.partitions == self.index

    @classmethod
    def from_node_config(cls, config: Mapping[str, object]) -> Device:
        unknown = sorted(set(config) - set(NODE_KEYS))
        if unknown:
            raise DeviceConfigError(
                f"node config key(s) {', '.join(unknown)} are unknown "
                f"(known: {', '.join(NODE_KEYS)})"
            )
        index = config.get(PARTITION)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DeviceConfigError(
                f"node config {PARTITION}={index!r} must be the user's index, a whole number "
                f"from 0 (start the SuperNode with --node-config '{PARTITION}=K ...')"
            )
        partitions = config.get("num-partitions")
        if partitions is not None and (
            isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
        ):
            raise DeviceConfigError(
                f"node config num-partitions={partitions!r} must be a whole number from 1 "
                "(Flower sets it in a simulation: the number of SuperNodes)"
            )
        device = cls(
            index,
            _text(config, MODEL),
            _text(config, CACHE),
            _text(config, WEIGHTS),
            _text(config, DATA_ROOT),
            None if _text(config, MODEL) is not None else partitions,
        )
        if device.model is None and partitions is None:
            raise DeviceConfigError(
                f"node config has no {MODEL}: a deployed device names the model it runs and "
                f'its asset folder (--node-config \'{PARTITION}={index} {MODEL}="..." '
                f"{CACHE}=\"...\"'); only a simulated node (with Flower's num-partitions) "
                "reads the run's shared cache"
            )
        if device.model is not None and device.cache_dir is None:
            raise DeviceConfigError(
                f"node config {MODEL}={device.model!r} needs {CACHE}: the folder where "
                "`python -m launch.assets user` put this device's assets"
            )
        return device

    def node_config(self) -> str:
        """This device as a SuperNode's ``--node-config`` (what :meth:`from_node_config`
        reads back)."""
        values = {
            PARTITION: self.index,
            MODEL: self.model,
            CACHE: self.cache_dir,
            WEIGHTS: self.weights_dir,
            DATA_ROOT: self.data_root,
        }
        return " ".join(
            f"{key}={value}" if isinstance(value, int) else f'{key}="{value}"'
            for key, value in values.items()
            if value is not None
        )

    def check(self, settings: RunSettings) -> None:
        """Refuse a run this device cannot serve: its index outside the run's users (a
        simulated node beyond them but within its ``num-partitions`` serves no user, as
        when a federation has more SuperNodes than a run has users), or a model other than
        the one the run expects of this user."""
        spare = self.partitions is not None and self.index < self.partitions
        if self.index >= settings.num_users and not spare:
            raise DeviceConfigError(
                f"node config {PARTITION}={self.index} is outside this run's users "
                f"0..{settings.num_users - 1}"
            )
        if self.model is None:
            return
        from common.assets.zoo import get_zoo

        known = get_zoo(settings.users.zoo).users
        if self.model not in known:
            raise DeviceConfigError(
                f"node config {MODEL}={self.model!r} is not a user model of zoo "
                f"{settings.users.zoo!r} (known: {', '.join(known)})"
            )
        expected = settings.users.models[self.index]
        if self.model != expected:
            raise DeviceConfigError(
                f"node config {MODEL}={self.model!r}, but this run's user {self.index} runs "
                f"{expected!r} (users.models of the run: {listed_models(settings.users.models)})"
            )

    def source(self, settings: RunSettings) -> ProblemSource:
        """Where this device's inputs for a run come from: its own built assets (never
        built during a run), or the run's shared cache for a simulated node."""
        from common.assets.source import AssetSource

        if self.model is None:
            return AssetSource(settings)
        assert self.cache_dir is not None  # from_node_config guarantees it
        own = settings.replace(
            cache_dir=self.cache_dir,
            weights_dir=self.weights_dir or settings.weights_dir,
            **{"data.root": self.data_root or settings.data.root},
        )
        advice = (
            f"build this device's assets first: {assets_command(self.model, self.cache_dir, own)}"
        )
        return AssetSource(own, missing=advice)

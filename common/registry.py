"""Named plug-ins (methods, datasets, zoos) that the modules defining them register.

The configuration validates names against a :class:`Registry` without importing
the domain modules itself: a registry knows which modules provide its entries
and imports them the first time it is asked for a name. A user's own class can
also be named by import path, ``package.module:Name``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, filled by ``providers`` (module names) on first use.

    ``base`` (``"package.module:Class"``, imported on first use) is the class an entry
    named by import path must subclass: :meth:`get` refuses anything else, so a
    configuration naming ``os:system`` is refused when it is validated, not when a
    party first builds it.
    """

    def __init__(
        self,
        kind: str,
        providers: tuple[str, ...],
        aliases: dict[str, str] | None = None,
        base: str | None = None,
    ) -> None:
        self.kind = kind
        self._providers = providers
        self._base = base
        self._aliases = dict(aliases or {})
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or call) that files ``entry`` under ``name``; names are unique."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._providers:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def canonical(self, name: str) -> str:
        """The registered name behind an alias (import paths pass through)."""
        return self._aliases.get(name, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and self.canonical(name) in self._entries

    def get(self, name: str, *, subclass_of: type | None = None) -> T:
        """The entry called ``name`` (or ``package.module:Name``); unknown names list the known."""
        self._load()
        key = self.canonical(str(name))
        if key in self._entries:
            return self._entries[key]
        if subclass_of is None and self._base is not None:
            module_name, _, attr = self._base.partition(":")
            subclass_of = getattr(importlib.import_module(module_name), attr)
        if ":" in key:
            module_name, _, attr = key.partition(":")
            try:
                entry = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"{self.kind} {name!r} could not be imported: {exc}") from exc
            if subclass_of is not None and not (
                isinstance(entry, type) and issubclass(entry, subclass_of)
            ):
                where = f"{subclass_of.__module__}.{subclass_of.__qualname__}"
                raise ValueError(f"{self.kind} {name!r} is not a subclass of {where}")
            return entry
        allowed = ", ".join([*self.names(), *sorted(self._aliases)])
        if subclass_of is not None:
            allowed += " or 'package.module:ClassName'"
        raise ValueError(f"unknown {self.kind} {name!r}; allowed: {allowed}")


# The project's registries. Each lists the modules that fill it; nothing is imported
# until a name is looked up.
METHODS: Registry[type] = Registry(
    "strategy",
    providers=("common.parties.consensus", "common.parties.feature_selection"),
    base="common.parties.access_point:AccessPoint",
    # the paper code's names (base_station.status / base_station.strategy)
    aliases={
        "shared": "federated",
        "multi-link": "multi_link",
        "First-K": "first_k",
        "Top-K": "top_k",
    },
)
DATASETS: Registry[Callable] = Registry("dataset", providers=("common.assets.data",))
ZOOS: Registry[object] = Registry("zoo", providers=("common.assets.zoo",))
AGGREGATORS: Registry[type] = Registry(
    "aggregator",
    providers=("common.maths.aggregation",),
    base="common.maths.aggregation:Aggregator",
)

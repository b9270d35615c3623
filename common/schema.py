"""Typed settings: every setting declared once, with its type, check, unit, doc and scope.

A setting is a field of a :class:`Section`, a frozen pydantic model that
refuses unknown keys. Its declaration says everything the rest of the project
needs to know about it::

    rho: Annotated[float, check(validation.positive_float)] = setting(
        "ADMM penalty ρ (scaled by the pilot count n inside the updates)",
        scope=Scope.RESULT,
    )

- the **type** is the annotation, and :func:`check` names the function of
  :mod:`common.maths.validation` that accepts or refuses a value (so the
  message says what is allowed, in the project's words);
- the **doc** and the **unit** are the first arguments of :func:`setting`;
- the **config key** is the field name, or ``alias`` where the configuration
  keeps the paper code's name (``communication.channel_usage`` is the field
  ``channel_uses``);
- the **scope** says what the setting changes (:class:`Scope`): the numbers of
  a run (so it belongs in a sweep point's key and a checkpoint's identity),
  the data a user's inputs are made of, or only how a run is executed.

Defaults live in the Hydra configuration (``conf/``), never here: a field
without a value is an error naming its key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo


class Scope(enum.Enum):
    """What a setting changes. Each scope includes what the ones after it say they change."""

    ASSETS = "assets"
    """The cached assets a party runs on (dataset, zoo, heads): names a user's data, and
    changes the numbers."""
    PILOTS = "pilots"
    """Which samples a user's inputs hold (the semantic pilots): names a user's data, and
    changes the numbers."""
    RESULT = "result"
    """The numbers of a run (method, channel, schedule): in a sweep point's key and a
    checkpoint's identity, not in a user's data."""
    LOCATION = "location"
    """Where a user's data are read from (the cache folder): names the data, but the same
    data anywhere give the same numbers."""
    EXECUTION = "execution"
    """How a run is executed (timeouts, resources, progress, labels): changes nothing a run
    computes; may change when a run is resumed."""
    RESOLVED = "resolved"
    """An input resolved into other settings when the settings are made (how many users,
    and how their models are drawn, become ``users.models``): its effect is in those, so
    it names nothing itself."""

    @property
    def changes_results(self) -> bool:
        """In a sweep point's key and compared on resume."""
        return self in (Scope.ASSETS, Scope.PILOTS, Scope.RESULT)

    @property
    def names_data(self) -> bool:
        """Part of the name of a user's prepared inputs (shared across runs by that name)."""
        return self in (Scope.ASSETS, Scope.PILOTS, Scope.LOCATION)

    @property
    def names_assets(self) -> bool:
        """Part of the name of a party's cached assets (encoder latents, head)."""
        return self in (Scope.ASSETS, Scope.LOCATION)


class _Never:
    """The type of :data:`NEVER`."""

    def __repr__(self) -> str:
        return "NEVER"


NEVER: Any = _Never()
"""A setting's ``neutral`` when it has none: it is always in a run's identity."""


@dataclass(frozen=True)
class Applies:
    """When an option-specific setting has an effect: while the setting at ``key`` passes
    ``test`` (``"communication.correlation"`` only under ``communication.model=correlated``).

    Attributes
    ----------
    key : str
        The dotted config key of the setting it depends on.
    test : Callable[[Any], bool]
        True for the values of ``key`` under which the setting is read.
    needs : str
        What to write to give it an effect, in the configuration's words
        (``"channel=correlated"``).
    """

    key: str
    test: Callable[[Any], bool]
    needs: str


def setting(
    doc: str,
    *,
    scope: Scope,
    unit: str | None = None,
    alias: str | None = None,
    applies: Applies | tuple[Applies, ...] = (),
    neutral: Any = NEVER,
) -> Any:
    """The declaration of one setting (a pydantic ``Field`` without a default).

    Parameters
    ----------
    doc : str
        One line: what the setting is, in the field's words.
    scope : Scope
        What the setting changes (sweep keys, shared data, resume checks follow it).
    unit : str, optional
        The unit of a physical quantity (``"dB"``, ``"s"``, ``"Hz"``).
    alias : str, optional
        The configuration's key when it differs from the field name.
    applies : Applies or tuple of Applies, optional
        When an option-specific setting is read (all must hold; default: always). Setting
        it explicitly where it is not read is refused (:func:`not_in_effect`).
    neutral : optional
        For a setting added after points and checkpoints were stored: the value that does
        what the program did before it existed. At that value it is left out of a run's
        identity, so what was stored before still names the same numbers (default
        :data:`NEVER`: always in it; ``None`` is a value like any other).
    """
    return Field(
        alias=alias,
        description=doc,
        json_schema_extra={
            "scope": scope.value,
            "unit": unit,
            "applies": applies if isinstance(applies, tuple) else (applies,),
            "neutral": neutral,
        },
    )


def check(function: Callable[..., Any], *args: Any, **kwargs: Any) -> PlainValidator:
    """A validator that calls ``function(field_name, value, *args, **kwargs)``.

    ``function`` is one of :mod:`common.maths.validation`'s checks (or any callable of that
    shape): it returns the value, converted, or raises
    :class:`~common.maths.validation.InvalidValue` saying what is allowed.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        return function(info.field_name, value, *args, **kwargs)

    return PlainValidator(validate)


class Section(BaseModel):
    """A group of settings (one ``conf/`` group): frozen, unknown keys refused.

    Fields are read by their configuration key (the alias where one is declared)
    or by their field name; dumps use the configuration keys.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, arbitrary_types_allowed=True
    )


def key_of(section: type[BaseModel], name: str) -> str:
    """The configuration key of field ``name`` of ``section``."""
    field = section.model_fields[name]
    return field.alias or name


def scope_of(section: type[BaseModel], name: str) -> Scope | None:
    """The declared scope of field ``name`` (None for a nested section)."""
    extra = section.model_fields[name].json_schema_extra
    if isinstance(extra, dict) and "scope" in extra:
        return Scope(extra["scope"])
    return None


def neutral_of(section: type[BaseModel], name: str) -> Any:
    """The value at which field ``name`` is left out of identities (:data:`NEVER`: none)."""
    extra = section.model_fields[name].json_schema_extra
    return extra.get("neutral", NEVER) if isinstance(extra, dict) else NEVER


def applies_of(section: type[BaseModel], name: str) -> tuple[Applies, ...]:
    """The conditions under which field ``name`` of ``section`` is read (empty: always)."""
    extra = section.model_fields[name].json_schema_extra
    return tuple(extra.get("applies", ())) if isinstance(extra, dict) else ()


def leaves(
    section: type[BaseModel], prefix: str = ""
) -> Iterator[tuple[str, type[BaseModel], str]]:
    """Every setting below ``section``: ``(dotted config key, section class, field name)``."""
    for name, field in section.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, key + ".")
        else:
            yield key, section, name


def undeclared(section: type[BaseModel]) -> list[str]:
    """Settings below ``section`` declared without :func:`setting` (no scope, no doc)."""
    missing = []
    for key, owner, name in leaves(section):
        if scope_of(owner, name) is None or not owner.model_fields[name].description:
            missing.append(key)
    return missing

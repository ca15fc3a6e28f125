"""Strict config sections on pydantic: unknown keys and wrong types are errors naming the key.

Every section is a frozen pydantic dataclass (:func:`section`) with ``extra="forbid"``
and strict scalar types (:data:`Int`, :data:`Float`, :data:`Bool`, :data:`Str`): bools
are never coerced from strings or ints, ints never from floats or strings, and a float
field takes an int as the float it is. ``Enum`` and ``Literal`` fields take only their
listed values (the YAML strings), tuples take YAML lists. A field's YAML key is its
name unless its pydantic ``alias`` says otherwise (``lambda`` for ``lam``); the alias is
the only key a file may use (:func:`load`), while Python code constructs and
``dataclasses.replace``-s sections by field name.

Pydantic's errors become one :class:`~training.config.errors.ConfigError` whose message
names every failing key by its full dotted path (``distill.lambda``, ``model.light_dims[1]``)
in the loader's long-standing wording (``must be an integer, got str '8'``); the
cross-field rules the sections check in ``__post_init__`` raise ``ConfigError`` with the
full key themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ErrorDetails

from training.config.errors import ConfigError

Int = Annotated[int, Strict()]
"""An integer; a bool, a float (even ``2.0``) or a string is an error."""
Float = Annotated[float, Strict()]
"""A number: a float, or an int read as that float; a bool or a string is an error."""
Bool = Annotated[bool, Strict()]
"""A YAML bool (``true``/``false``); ``"false"``, ``0`` and ``1`` are errors."""
Str = Annotated[str, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]

_SectionT = TypeVar("_SectionT")


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


def none_is_empty(tp: Any) -> BeforeValidator:
    """Annotation for a mapping field of type ``tp``: a YAML ``null`` (``model:`` with
    nothing under it) reads as an empty mapping, and the JSON Schema allows it."""
    return BeforeValidator(_none_is_empty, json_schema_input_type=tp | None)


CONFIG = ConfigDict(
    extra="forbid",
    # Python code builds and replaces sections by field name; files use the YAML keys
    # only (load() validates by alias alone).
    validate_by_name=True,
    validate_by_alias=True,
)


def section(name: str) -> Callable[[type[_SectionT]], type[_SectionT]]:
    """Make ``cls`` a frozen, strict pydantic dataclass: the config section ``name``.

    Building it directly (or through ``dataclasses.replace``) raises ``ConfigError``
    naming ``name.key`` like the loader does, instead of pydantic's ``ValidationError``.
    """

    def wrap(cls: type[_SectionT]) -> type[_SectionT]:
        built = pydantic_dataclass(frozen=True, config=CONFIG)(cls)
        validating_init = built.__init__

        @functools.wraps(validating_init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            try:
                validating_init(self, *args, **kwargs)
            except ValidationError as exc:
                raise ConfigError(describe(exc, built, (name,) if name else ())) from None

        built.__init__ = __init__
        return built

    return wrap


def load(cls: type[_SectionT], data: Any) -> _SectionT:
    """The section ``cls`` from parsed YAML/JSON; raises ``ConfigError`` naming the keys."""
    try:
        return _adapter(cls).validate_python(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError(describe(exc, cls)) from None


def dump(obj: Any) -> Any:
    """Plain YAML/JSON data of a section: YAML keys, enum values, lists for tuples."""
    return _adapter(type(obj)).dump_python(obj, mode="json", by_alias=True)


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of the YAML file that :func:`load` reads into ``cls``."""
    return _adapter(cls).json_schema(by_alias=True, mode="validation")


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


# ---------------------------------------------------------------- error messages


def describe(exc: ValidationError, root: type, prefix: tuple[str, ...] = ()) -> str:
    """Every error of ``exc`` as ``full.key: what is wrong``, joined by ``; ``."""
    lines = [_line(error, root, prefix) for error in exc.errors()]
    return "; ".join(dict.fromkeys(lines))


def _line(error: ErrorDetails, root: type, prefix: tuple[str, ...]) -> str:
    ctx = error.get("ctx", {})
    if error["type"] == "value_error" and isinstance(ctx.get("error"), ConfigError):
        return str(ctx["error"])  # a section rule: its message names the full key
    loc = tuple(p for p in error["loc"] if p != "[key]")
    where = _path(prefix + loc) or "config"
    value = error.get("input")
    got = f"{type(value).__name__} {value!r}"
    kind = error["type"]
    if kind in _UNKNOWN_KEY:
        allowed = sorted(_yaml_keys(_section_at(root, loc[:-1])))
        parent = _path(prefix + loc[:-1])
        return f"{parent}{'.' if parent else ''}{loc[-1]}: unknown key; allowed: {allowed}"
    if kind == "missing":
        return f"{where}: required key missing"
    if kind in ("dataclass_type", "dataclass_args_type"):
        return f"{where}: expected a mapping, got {type(value).__name__}"
    if kind in ("enum", "literal_error"):
        return f"{where}: must be one of {ctx['expected']}, got {got}"
    if kind in _BOUNDS:
        op, bound = _BOUNDS[kind], next(iter(ctx.values()))
        return f"{where}: must be {op} {bound:g}, got {value!r}"
    if kind == "too_short":
        return f"{where}: needs at least {ctx['min_length']} value(s), got {got}"
    if kind in _TYPE_WORDS:
        return f"{where}: must be {_TYPE_WORDS[kind]}, got {got}"
    return f"{where}: {error['msg'][0].lower()}{error['msg'][1:]}, got {got}"


_UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden", "invalid_key")
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
_TYPE_WORDS = {
    "bool_type": "a YAML bool (true/false)",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
}


def _path(loc: tuple[Any, ...]) -> str:
    """``("model", "light_dims", 1)`` -> ``model.light_dims[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def _yaml_keys(cls: type | None) -> list[str]:
    if cls is None or not dataclasses.is_dataclass(cls):
        return []
    fields = cls.__pydantic_fields__  # type: ignore[attr-defined]
    return [info.alias or name for name, info in fields.items()]


def _section_at(root: type, loc: tuple[Any, ...]) -> type | None:
    """The section class reached from ``root`` by the YAML keys ``loc``."""
    cls: Any = root
    for key in loc:
        if not dataclasses.is_dataclass(cls):
            return None
        by_key = {info.alias or n: info for n, info in cls.__pydantic_fields__.items()}
        if key not in by_key:
            return None
        cls = _unwrap(by_key[key].annotation)
    return cls if dataclasses.is_dataclass(cls) else None


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


__all__ = [
    "CONFIG",
    "Bool",
    "Float",
    "Int",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Str",
    "describe",
    "dump",
    "json_schema",
    "load",
    "none_is_empty",
    "section",
]

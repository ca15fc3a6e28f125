"""Strict loading of config dataclasses from parsed YAML/JSON, and the way back.

Hand-written over dataclasses (no ``**kwargs``): an unknown key is an error naming
it with its path (``distill.lamda``), a missing required key too, and every value is
checked against its field's type — bools are never coerced from strings or ints,
``Literal`` and ``Enum`` fields take only their listed values. A field's YAML key is
its name unless its ``key`` metadata says otherwise (``lambda`` for ``lam``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal

from training.config.errors import ConfigError


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def build(cls: type, data: Any, path: str) -> Any:
    """The dataclass ``cls`` from parsed data; raises :class:`ConfigError` naming the key.

    Args:
        cls: a config dataclass (its nested dataclass fields are built in turn).
        data: the parsed mapping (``None`` is an empty section below the top level).
        path: the dotted key of ``data`` in the whole config ("" at the top).
    """
    where = path or "config"
    if data is None and path:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    by_key = {_key(f): f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in by_key:
            raise ConfigError(
                f"{path + '.' if path else ''}{key}: unknown key; allowed: {sorted(by_key)}"
            )
    kwargs: dict[str, Any] = {}
    for key, f in by_key.items():
        full = f"{path}.{key}" if path else key
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key], full)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{full}: required key missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            raise ConfigError(f"{key}: must be one of {list(args)}, got {_type_name(value)}")
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        allowed = [e.value for e in tp]
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(f"{key}: must be one of {allowed}, got {_type_name(value)}")
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be a YAML bool (true/false), got {_type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {_type_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {_type_name(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {_type_name(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list, got {_type_name(value)}")
        return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping, got {_type_name(value)}")
        return {
            _convert(args[0], k, f"{key}"): _convert(args[1], v, f"{key}.{k}")
            for k, v in value.items()
        }
    raise ConfigError(f"{key}: unsupported config type {tp!r}")  # pragma: no cover


def dump(obj: Any) -> Any:
    """Plain YAML/JSON data of a config dataclass (YAML keys, enum values, lists)."""
    if dataclasses.is_dataclass(obj):
        return {_key(f): dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    return obj


__all__ = ["build", "dump"]

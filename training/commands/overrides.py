"""``--set section.key=value``: adjust a run config from the command line.

Overrides edit the parsed YAML *before* it is validated, so an override is checked
exactly like the file (``RunConfig.from_dict``): an unknown key, a wrong type or an
out-of-range value is an error naming the key. Values are parsed as YAML (and ``2e-3`` as the
number it looks like), so ``--set optim.epochs=3``, ``--set 'model.light_dims=[64,32]'``,
``--set model.sparse=false`` and ``--set distill.variant=pfd`` all mean what they say.

Used by ``rocketrank train`` (and reusable by any command that reads a run config:
:func:`add_set_argument`, :func:`apply_overrides`, :func:`load_config_with_overrides`).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from training.config.errors import ConfigError
from training.config.run import RunConfig


class OverrideError(ConfigError):
    """A ``--set`` that is malformed or does not fit the config's structure."""


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--set section.key=value`` option (dest ``set``)."""
    parser.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="SECTION.KEY=VALUE",
        help="override one run-config value, validated like the file (repeatable), "
        "e.g. --set optim.epochs=3 --set 'model.light_dims=[64,32]'",
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> ``(["a", "b"], 1)`` (the value parsed as YAML).

    Raises:
        OverrideError: no ``=``, an empty key part, or a value that is not YAML.
    """
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise OverrideError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. optim.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise OverrideError(f"--set {text!r}: the value is not valid YAML: {exc}") from exc
    return [p.strip() for p in parts], _number(value)


def _number(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``2e-3`` as a string; on a command line it is a number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if number == number and abs(number) != float("inf"):  # not nan/inf words
            return number
    return value


def apply_overrides(raw: Mapping[str, Any] | None, overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the parsed config ``raw`` with every ``KEY.PATH=VALUE`` applied in order.

    Missing sections are created (``from_dict`` then reports an unknown one); a
    path through a value that is not a mapping is an error here.

    Raises:
        OverrideError: a malformed override or one through a non-mapping value.
    """
    data: dict[str, Any] = copy.deepcopy(dict(raw or {}))
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise OverrideError(
                    f"--set {text!r}: {where} is {child!r}, not a section with keys"
                )
            node = child
        node[parts[-1]] = value
    return data


def load_config_with_overrides(path: str | Path, overrides: Iterable[str] | None) -> RunConfig:
    """Read a run config YAML, apply ``overrides`` and validate the result.

    Raises:
        ConfigError: the file is missing or invalid, or an override does not fit
            (messages name the file and, for overrides, the ``--set``).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"--config {path}: run config not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping at the top level")
    overrides = list(overrides or [])
    merged = apply_overrides(raw, overrides)
    try:
        return RunConfig.from_dict(merged)
    except ConfigError as exc:
        origin = f"{path} with --set {' --set '.join(overrides)}" if overrides else str(path)
        raise ConfigError(f"{origin}: {exc}") from exc


__all__ = [
    "OverrideError",
    "add_set_argument",
    "apply_overrides",
    "load_config_with_overrides",
    "parse_override",
]

"""The run config's error and the range checks the sections run on their values."""

from __future__ import annotations


class ConfigError(ValueError):
    """The run config is invalid; the message names the key (``section.key``)."""


def positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")


def non_negative(key: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{key}: must be >= 0, got {value!r}")


__all__ = ["ConfigError", "non_negative", "positive"]

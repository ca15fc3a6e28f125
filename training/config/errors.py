"""The run config's error: every invalid key or value, named by its full dotted key."""

from __future__ import annotations


class ConfigError(ValueError):
    """The run config is invalid; the message names the key (``section.key``)."""


__all__ = ["ConfigError"]

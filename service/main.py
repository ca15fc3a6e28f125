"""The ASGI entry point: ``uvicorn service.main:app`` (settings from ``ROCKETRANK_*``).

``app`` is built on first access rather than at import: the settings come from the
environment, and importing this module (tools, ``rocketrank serve``'s parent
process) must not fail or open anything when they are not set.
"""

from __future__ import annotations

from typing import Any

from service.app import create_app

__all__ = ["create_app"]  # and `app`, built lazily by __getattr__


def __getattr__(name: str) -> Any:
    if name == "app":
        app = globals()["app"] = create_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The export error, shared by the run loader, parity, publishing and ``export_run``."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The run cannot be exported (missing files, failed parity, bad item catalogue)."""


__all__ = ["ExportError"]

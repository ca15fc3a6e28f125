"""Provenance helpers: where a result came from (code, package, file bytes).

One home for the small facts every report, manifest and benchmark records:
the git commit of the checkout, the installed package version, the sha256 of
a file, and strict-JSON cleaning of metric dictionaries. Imports only the
standard library and numpy, so ``models``, ``training``, ``service`` and
``bench`` can all use it.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of one file's bytes, read in 1 MiB chunks."""
    return sha256_files([path])


def sha256_files(paths: Iterable[str | Path]) -> str:
    """Hex sha256 of the concatenated bytes of ``paths``, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def git_commit(cwd: str | Path | None = None, *, mark_dirty: bool = False) -> str | None:
    """HEAD of the git checkout holding ``cwd`` (default: this code).

    Args:
        cwd: a directory inside the checkout; defaults to this file's folder.
        mark_dirty: append ``+dirty`` when tracked files have uncommitted changes.

    Returns:
        The commit hash, or ``None`` outside git or without a git binary.
    """
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        commit = head.stdout.strip()
        if head.returncode != 0 or not commit:
            return None
        if not mark_dirty:
            return commit
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if status.stdout.strip() else "")


def package_version(name: str = "rocketrank") -> str:
    """Installed version of ``name``, ``0+unknown`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON: NaN/inf floats become ``None``, numpy scalars Python ones.

    Mappings (keys as strings), lists and tuples are cleaned recursively.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = [
    "git_commit",
    "json_safe",
    "package_version",
    "sha256_bytes",
    "sha256_file",
    "sha256_files",
]

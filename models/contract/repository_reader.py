"""Reading the model repository: its layout, version names and read-only queries.

Layout::

    REPO/NAME/VERSION/...        one artifact (see models.contract.manifest)
    REPO/NAME/current            symlink -> VERSION (relative)
    REPO/NAME/history.json       promotions, oldest first (what rollback walks back)
    REPO/NAME/.lock              flock'd while the pointer, history or versions change

``VERSION`` is the UTC time of publication, ``YYYYmmddTHHMMSSZ``, with ``-2``,
``-3``, ... appended when that second is taken.

Damage from outside is survived, not propagated:

* a truncated or empty ``history.json`` (a full disk, a copy tool) reads as
  the history rebuilt from the version directories (oldest first, up to
  ``current``; logged), and the next promote or rollback writes it back;
* ``current`` that is not a symlink (a sync tool that copied it as a
  directory): :meth:`RepositoryReader.current_version` raises
  :class:`BrokenPointerError`, :meth:`RepositoryReader.fallback_versions`
  names the last good versions to serve instead, and the next promote or
  rollback replaces the directory with a symlink.

:class:`RepositoryReader` only reads, so it works on a read-only mount (the
service's); :class:`models.contract.repository.ModelRepository` adds the writes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from models.contract.manifest import MANIFEST_FILE, ArtifactError, read_manifest

log = logging.getLogger(__name__)

CURRENT = "current"
HISTORY_FILE = "history.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")


class RepositoryError(ValueError):
    """A repository operation cannot be done (unknown name/version, nothing to roll back)."""


class BrokenPointerError(RepositoryError):
    """``current`` exists but is not a symlink to a version (e.g. copied as a directory)."""


def version_sort_key(version: str) -> tuple[str, int]:
    """Orders ``...Z`` < ``...Z-2`` < ``...Z-10`` (string order would put -10 before -2)."""
    m = _VERSION.match(version)
    if m is None:
        raise RepositoryError(f"not a version name: {version!r}")
    return m.group(1), int(m.group(2) or 1)


class RepositoryReader:
    """Read-only queries on the versions of named models under one root directory.

    Args:
        root: the repository directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------- paths
    def model_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise RepositoryError(
                f"invalid model name {name!r}: use letters, digits, '.', '_' and '-'"
            )
        return self.root / name

    def version_dir(self, name: str, version: str) -> Path:
        version_sort_key(version)
        return self.model_dir(name) / version

    # ----------------------------------------------------------------- queries
    def names(self) -> list[str]:
        """Model names that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if _NAME.match(p.name) and self.list_versions(p.name)
        )

    def list_versions(self, name: str) -> list[str]:
        """Complete versions of ``name``, oldest first (staging and reserved dirs excluded)."""
        directory = self.model_dir(name)
        if not directory.is_dir():
            return []
        found = [
            p.name
            for p in directory.iterdir()
            if _VERSION.match(p.name) and not p.is_symlink() and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(found, key=version_sort_key)

    def current_version(self, name: str) -> str | None:
        """The version ``current`` points at, or ``None`` when nothing was promoted."""
        pointer = self.model_dir(name) / CURRENT
        try:
            target = os.readlink(pointer)
        except FileNotFoundError:
            return None
        except OSError as exc:  # EINVAL: a directory or file, not a symlink
            kind = "a directory" if pointer.is_dir() else "not a symlink"
            raise BrokenPointerError(
                f"model {name!r}: {pointer} is {kind} (copied by a sync tool?); "
                f"fix: `rocketrank models promote --repo {self.root} --name {name} "
                f"--version VERSION`"
            ) from exc
        version = Path(target).name
        if _VERSION.match(version) is None:
            raise BrokenPointerError(
                f"model {name!r}: {pointer} points at {target!r}, not a version name"
            )
        return version

    def fallback_versions(self, name: str) -> list[str]:
        """What to serve when ``current`` is broken, best first: the promotions of the
        history (newest first), then every other version (newest first)."""
        versions = self.list_versions(name)
        existing = set(versions)
        ordered: list[str] = []
        for entry in reversed(self.history(name)):
            version = entry.get("version")
            if version in existing and version not in ordered:
                ordered.append(version)
        ordered += [v for v in reversed(versions) if v not in ordered]
        return ordered

    def resolve_current(self, name: str) -> Path:
        """Absolute path of the current version's directory.

        Resolve once and load from the returned path: the pointer may flip at any
        time, the version directory it names does not change.
        """
        version = self.current_version(name)
        if version is None:
            raise RepositoryError(f"model {name!r} in {self.root} has no current version")
        path = (self.model_dir(name) / version).resolve()
        if not path.is_dir():
            raise RepositoryError(f"model {name!r}: current points at missing version {version}")
        return path

    def history(self, name: str) -> list[dict[str, str]]:
        """Promotions of ``name``, oldest first: ``{"version", "at", "action"}``.

        A truncated, empty or malformed ``history.json`` is not an error: it reads as
        the history rebuilt from the version directories (see :meth:`_rebuilt_history`)
        and a warning names the file; the next promote or rollback rewrites it.
        """
        file = self.model_dir(name) / HISTORY_FILE
        try:
            text = file.read_text()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            return self._rebuilt_history(name, file, str(exc))
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            return self._rebuilt_history(name, file, f"not JSON ({exc})")
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("version"), str) for e in entries
        ):
            return self._rebuilt_history(name, file, "not a list of {version, at, action}")
        return entries

    def _rebuilt_history(self, name: str, file: Path, why: str) -> list[dict[str, str]]:
        """Every version up to ``current`` (or all when the pointer is missing or broken),
        oldest first, as promotions dated by their manifests' ``created_at``."""
        versions = self.list_versions(name)
        try:
            current = self.current_version(name)
        except BrokenPointerError:
            current = None
        if current in versions:
            versions = versions[: versions.index(current) + 1]
        entries = []
        for version in versions:
            try:
                at = read_manifest(self.model_dir(name) / version).created_at
            except ArtifactError:
                continue  # a broken version is no rollback target
            entries.append({"version": version, "at": at, "action": "repaired"})
        log.warning(
            "%s is damaged (%s): using the history rebuilt from the %d version directories; "
            "the next promote or rollback rewrites it",
            file, why, len(entries),
        )  # fmt: skip
        return entries

    # ----------------------------------------------------------------- versions to keep
    def _rollback_plan(self, name: str, current: str) -> tuple[str, list[dict[str, str]]]:
        entries = self.history(name)
        existing = set(self.list_versions(name)) - {current}
        while entries and entries[-1]["version"] not in existing:
            entries.pop()
        if not entries:
            raise RepositoryError(
                f"model {name!r}: no earlier promoted version to roll back to from {current}"
                " (nothing was moved)"
            )
        return entries[-1]["version"], entries

    def rollback_target(self, name: str) -> str | None:
        """The version :meth:`ModelRepository.rollback` would make current now (``None``: none)."""
        try:
            current = self.current_version(name)
        except BrokenPointerError:
            return None
        if current is None:
            return None
        try:
            return self._rollback_plan(name, current)[0]
        except RepositoryError:
            return None

    def _protected(self, name: str, versions: list[str], keep: int) -> set[str]:
        kept = set(versions[-keep:])
        promoted: list[str] = []
        for entry in reversed(self.history(name)):
            if entry["version"] not in promoted:
                promoted.append(entry["version"])
        kept.update(promoted[:keep])
        try:
            kept.add(self.current_version(name) or "")
        except BrokenPointerError as exc:
            log.warning("not pruning %s: %s", name, exc)  # which version serves is unknown
            return set(versions)
        kept.add(self.rollback_target(name) or "")
        return kept

    # ----------------------------------------------------------------- helpers
    def _require_version(self, name: str, version: str) -> None:
        version_sort_key(version)
        if version not in self.list_versions(name):
            known = self.list_versions(name)
            raise RepositoryError(
                f"model {name!r} has no version {version!r}; known: {known or 'none'}"
            )

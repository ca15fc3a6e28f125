"""The model repository: versioned artifacts on a file system, with an atomic pointer.

Layout::

    REPO/NAME/VERSION/...        one artifact (see models.contract.artifact)
    REPO/NAME/current            symlink -> VERSION (relative)
    REPO/NAME/history.json       promotions, oldest first (what rollback walks back)
    REPO/NAME/.lock              flock'd while the pointer, history or versions change

``VERSION`` is the UTC time of publication, ``YYYYmmddTHHMMSSZ``, with ``-2``,
``-3``, ... appended when that second is taken.

Atomicity, so a reader never sees a half-written artifact or a missing pointer:

* publish: the artifact is written into a hidden staging directory inside
  ``REPO/NAME`` (same file system), then ``os.rename``'d onto its version name.
  The version name is reserved first with ``os.mkdir`` (which fails if another
  publisher holds it); POSIX ``rename`` replaces that empty directory atomically.
* promote / rollback: a temporary symlink is created next to ``current`` and
  ``os.replace``'d over it, so ``current`` always exists and always points at a
  complete version.
* prune: a version is renamed to a hidden name before it is deleted, and the
  version ``current`` points at is never pruned. Pruning also removes what a
  killed process left behind (staging directories older than a day).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from models.contract.artifact import MANIFEST_FILE, ArtifactError, verify_artifact

CURRENT = "current"
HISTORY_FILE = "history.json"
LOCK_FILE = ".lock"
HISTORY_KEPT = 1000
"""Promotions remembered (rollback can walk back this far)."""
ABANDONED_AFTER_SECONDS = 24 * 3600
"""Staging directories older than this are leftovers of a killed export."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")


class RepositoryError(ValueError):
    """A repository operation cannot be done (unknown name/version, nothing to roll back)."""


def version_sort_key(version: str) -> tuple[str, int]:
    """Orders ``...Z`` < ``...Z-2`` < ``...Z-10`` (string order would put -10 before -2)."""
    m = _VERSION.match(version)
    if m is None:
        raise RepositoryError(f"not a version name: {version!r}")
    return m.group(1), int(m.group(2) or 1)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


class ModelRepository:
    """Versions of named models under one root directory.

    Args:
        root: the repository directory (created on first publish).
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
        try:
            target = os.readlink(self.model_dir(name) / CURRENT)
        except FileNotFoundError:
            return None
        return Path(target).name

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
        """Promotions of ``name``, oldest first: ``{"version", "at", "action"}``."""
        file = self.model_dir(name) / HISTORY_FILE
        try:
            return list(json.loads(file.read_text()))
        except FileNotFoundError:
            return []

    # ----------------------------------------------------------------- publish
    def publish(
        self,
        name: str,
        write: Callable[[Path, str], None],
        *,
        promote: bool = True,
        keep: int | None = None,
        verify: bool = True,
    ) -> str:
        """Publish a new version atomically.

        Args:
            name: model name.
            write: ``write(staging_dir, version)`` fills the staging directory with a
                complete artifact whose manifest names ``version``.
            promote: point ``current`` at the new version.
            keep: afterwards keep only the newest ``keep`` versions (and ``current``).
            verify: check the staged artifact's checksums and spec hash before
                it becomes visible.

        Returns:
            The new version name.
        """
        if keep is not None and keep < 1:
            raise RepositoryError(f"keep must be >= 1, got {keep}")
        directory = self.model_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        version = self._reserve_version(directory)
        final = directory / version
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=directory))
        try:
            write(staging, version)
            if verify:
                verify_artifact(staging)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; readers may be another user
            _fsync_tree(staging)  # the data is on disk before the name says it is complete
            os.rename(staging, final)  # replaces the reserved empty directory atomically
            _fsync_dir(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                final.rmdir()
            raise
        if promote:
            self.promote(name, version, verify=False)
        if keep is not None:
            self.prune(name, keep)
        return version

    def _reserve_version(self, directory: Path) -> str:
        stamp = _utc_stamp()
        for n in range(1, 10_000):
            version = stamp if n == 1 else f"{stamp}-{n}"
            try:
                os.mkdir(directory / version)
            except FileExistsError:
                continue
            return version
        raise RepositoryError(f"{directory}: no free version name for {stamp}")

    # ----------------------------------------------------------------- pointer
    def promote(self, name: str, version: str, *, verify: bool = True) -> None:
        """Point ``current`` at ``version`` and record it in the history.

        Raises:
            RepositoryError: unknown version.
            ArtifactError: the version fails verification (``verify=True``).
        """
        self._require_version(name, version)
        if verify:
            verify_artifact(self.version_dir(name, version))
        with self._locked(name):
            self._flip(name, version)
            entries = self.history(name)
            entries.append({"version": version, "at": _now_iso(), "action": "promote"})
            self._write_history(name, entries[-HISTORY_KEPT:])

    def rollback(self, name: str) -> str:
        """Point ``current`` back at the version promoted before it.

        Walks the history: trailing entries that are the current version or no
        longer exist are dropped, and the most recent remaining promotion becomes
        current. Rolling back twice
        goes back two promotions.

        Returns:
            The version now current.

        Raises:
            RepositoryError: there is no earlier version to go back to.
        """
        with self._locked(name):
            current = self.current_version(name)
            if current is None:
                raise RepositoryError(f"model {name!r}: nothing promoted, nothing to roll back")
            entries = self.history(name)
            existing = set(self.list_versions(name)) - {current}
            while entries and entries[-1]["version"] not in existing:
                entries.pop()
            if not entries:
                raise RepositoryError(
                    f"model {name!r}: no earlier promoted version to roll back to from {current}"
                )
            target = entries[-1]["version"]
            self._flip(name, target)
            self._write_history(name, entries)
            return target

    def _flip(self, name: str, version: str) -> None:
        directory = self.model_dir(name)
        tmp = directory / f".{CURRENT}-{uuid.uuid4().hex}"
        os.symlink(version, tmp)
        try:
            os.replace(tmp, directory / CURRENT)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _write_history(self, name: str, entries: list[dict[str, str]]) -> None:
        directory = self.model_dir(name)
        tmp = directory / f".{HISTORY_FILE}-{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
        os.replace(tmp, directory / HISTORY_FILE)

    # ----------------------------------------------------------------- pruning
    def prune(self, name: str, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions; ``current`` is never deleted.

        Returns:
            The deleted versions.
        """
        if keep < 1:
            raise RepositoryError(f"keep must be >= 1, got {keep}")
        directory = self.model_dir(name)
        deleted: list[str] = []
        with self._locked(name):
            versions = self.list_versions(name)
            current = self.current_version(name)
            for version in versions[: max(len(versions) - keep, 0)]:
                if version == current:
                    continue
                # Rename first so the version disappears in one step, then delete.
                doomed = directory / f".deleting-{version}-{uuid.uuid4().hex[:8]}"
                os.rename(directory / version, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
                deleted.append(version)
            self._remove_abandoned(directory)
        return deleted

    @staticmethod
    def _remove_abandoned(directory: Path) -> None:
        """Remove leftovers of killed processes: half-deleted versions, and staging
        directories (and empty reserved version names) untouched for a day."""
        cutoff = time.time() - ABANDONED_AFTER_SECONDS
        for p in directory.iterdir():
            try:
                if p.name.startswith(".deleting-") or (
                    p.name.startswith(".staging-") and p.stat().st_mtime < cutoff
                ):
                    shutil.rmtree(p, ignore_errors=True)
                elif (
                    _VERSION.match(p.name)
                    and p.is_dir()
                    and not p.is_symlink()
                    and not any(p.iterdir())
                    and p.stat().st_mtime < cutoff
                ):
                    p.rmdir()
            except OSError:
                continue  # another process got there first

    # ----------------------------------------------------------------- helpers
    def _require_version(self, name: str, version: str) -> None:
        version_sort_key(version)
        if version not in self.list_versions(name):
            known = self.list_versions(name)
            raise RepositoryError(
                f"model {name!r} has no version {version!r}; known: {known or 'none'}"
            )

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        directory = self.model_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(directory)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Module-level shorthands for callers that hold a repository path, not an object.


def list_versions(repo: str | Path, name: str) -> list[str]:
    return ModelRepository(repo).list_versions(name)


def current_version(repo: str | Path, name: str) -> str | None:
    return ModelRepository(repo).current_version(name)


def resolve_current(repo: str | Path, name: str) -> Path:
    return ModelRepository(repo).resolve_current(name)


def promote(repo: str | Path, name: str, version: str) -> None:
    ModelRepository(repo).promote(name, version)


def rollback(repo: str | Path, name: str) -> str:
    return ModelRepository(repo).rollback(name)


__all__ = [
    "CURRENT",
    "HISTORY_FILE",
    "ArtifactError",
    "ModelRepository",
    "RepositoryError",
    "current_version",
    "list_versions",
    "promote",
    "resolve_current",
    "rollback",
    "version_sort_key",
]

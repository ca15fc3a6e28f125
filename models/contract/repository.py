"""The model repository: versioned artifacts on a file system, with an atomic pointer.

Layout::

    REPO/NAME/VERSION/...        one artifact (see models.contract.manifest)
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
* prune: a version is renamed to a hidden name before it is deleted. The
  version ``current`` points at, the version a rollback would go back to and
  the last ``keep`` promoted versions are never pruned. Pruning also removes
  what a killed process left behind (staging directories older than a day).

Durability (a power cut, not only a killed process): every file is fsynced
before the rename that makes it visible, and the directory after it — the
staged artifact, ``history.json`` and the ``current`` symlink alike.

Damage from outside is survived, not propagated:

* a truncated or empty ``history.json`` (a full disk, a copy tool) reads as
  the history rebuilt from the version directories (oldest first, up to
  ``current``; logged), and the next promote or rollback writes it back;
* ``current`` that is not a symlink (a sync tool that copied it as a
  directory): :meth:`ModelRepository.current_version` raises
  :class:`BrokenPointerError`, :meth:`ModelRepository.fallback_versions`
  names the last good versions to serve instead, and the next promote or
  rollback replaces the directory with a symlink.

Writers need a writable mount: on a read-only one (the service's)
:class:`ReadOnlyRepositoryError` names the writer command instead of an
``OSError``. ``RR_REPOSITORY_PAUSE_AT`` (tests only) stops a writer at a named
step so a test can SIGKILL it there (``tests/suites/reliability/test_repository_kill.py``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from models.contract.manifest import MANIFEST_FILE, ArtifactError, read_manifest
from models.contract.verify import verify_artifact

log = logging.getLogger(__name__)

CURRENT = "current"
HISTORY_FILE = "history.json"
LOCK_FILE = ".lock"
HISTORY_KEPT = 1000
"""Promotions remembered (rollback can walk back this far)."""
ABANDONED_AFTER_SECONDS = 24 * 3600
"""Staging directories older than this are leftovers of a killed export."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")


PAUSE_ENV = "RR_REPOSITORY_PAUSE_AT"
"""Tests only: the writer step (e.g. ``flip:replaced``) at which to stop and wait to be killed."""


class RepositoryError(ValueError):
    """A repository operation cannot be done (unknown name/version, nothing to roll back)."""


class BrokenPointerError(RepositoryError):
    """``current`` exists but is not a symlink to a version (e.g. copied as a directory)."""


class ReadOnlyRepositoryError(RepositoryError):
    """A write was asked of a repository mounted read-only here."""


def _pause_point(point: str) -> None:
    """Tests only: stop here, forever, when ``RR_REPOSITORY_PAUSE_AT`` names this step."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    marker = os.environ.get(PAUSE_ENV + "_FILE")
    if marker:
        Path(marker).write_text(point)
    while True:  # the test SIGKILLs the process here
        time.sleep(3600)


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
            _pause_point("publish:staged")
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; readers may be another user
            _fsync_tree(staging)  # the data is on disk before the name says it is complete
            os.rename(staging, final)  # replaces the reserved empty directory atomically
            _pause_point("publish:renamed")
            _fsync_dir(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                final.rmdir()
            raise
        _pause_point("publish:published")
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

    def rollback(self, name: str, *, expect_current: str | None = None) -> str:
        """Point ``current`` back at the version promoted before it.

        Walks the history: trailing entries that are the current version or no
        longer exist are dropped, and the most recent remaining promotion becomes
        current. Rolling back twice goes back two promotions.

        Args:
            name: model name.
            expect_current: roll back only if ``current`` is this version; otherwise
                nothing moves (a retried rollback is a no-op, not one step more).

        Returns:
            The version now current.

        Raises:
            RepositoryError: there is no earlier version to go back to.
        """
        return self.rollback_all([name], expect_current={name: expect_current})[name]

    def rollback_all(
        self, names: list[str], *, expect_current: dict[str, str | None] | None = None
    ) -> dict[str, str]:
        """Roll several models back together: all of them or none.

        Every model's target is found (under all the models' locks) before any
        pointer moves, so one without an earlier version leaves every pointer as it
        was. With ``expect_current`` (name -> version), a model whose ``current`` is
        no longer the expected version is taken to be rolled back already: when no
        model matches, nothing moves (a retry is a no-op); a mix of matching and
        moved models is refused.

        Returns:
            name -> the version now current.

        Raises:
            RepositoryError: a model has no earlier version, or the pointers are
                partly as expected (someone else moved some of them).
        """
        expected = {n: v for n, v in (expect_current or {}).items() if v is not None}
        with contextlib.ExitStack() as stack:
            for name in sorted(set(names)):  # one order: two rollbacks cannot deadlock
                stack.enter_context(self._locked(name))
            _pause_point("rollback:locked")
            current = {name: self._current_for_rollback(name) for name in names}
            moved = sorted(n for n in expected if n in current and current[n] != expected[n])
            if moved and len(moved) == len([n for n in names if n in expected]):
                log.info("rollback: %s already moved from the expected versions; no-op", moved)
                return current
            if moved:
                raise RepositoryError(
                    f"rollback refused, nothing moved: {moved} are no longer at the expected "
                    f"version(s) {[expected[n] for n in moved]} while the others are"
                )
            plans = {name: self._rollback_plan(name, current[name]) for name in names}
            for name, (target, entries) in plans.items():
                self._flip(name, target)
                self._write_history(name, entries)
                _pause_point("rollback:one-moved")
            return {name: target for name, (target, _) in plans.items()}

    def _current_for_rollback(self, name: str) -> str:
        current = self.current_version(name)
        if current is None:
            raise RepositoryError(f"model {name!r}: nothing promoted, nothing to roll back")
        return current

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
        """The version :meth:`rollback` would make current now (``None``: none)."""
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

    def _flip(self, name: str, version: str) -> None:
        directory = self.model_dir(name)
        pointer = directory / CURRENT
        if pointer.is_dir() and not pointer.is_symlink():
            # a copied `current` directory: move it aside (pruning deletes it), so the
            # symlink can replace it
            os.rename(pointer, directory / f".deleting-{CURRENT}-{uuid.uuid4().hex[:8]}")
        tmp = directory / f".{CURRENT}-{uuid.uuid4().hex}"
        os.symlink(version, tmp)
        _pause_point("flip:symlink-created")
        try:
            os.replace(tmp, pointer)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _pause_point("flip:replaced")
        _fsync_dir(directory)

    def _write_history(self, name: str, entries: list[dict[str, str]]) -> None:
        directory = self.model_dir(name)
        tmp = directory / f".{HISTORY_FILE}-{uuid.uuid4().hex}"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(entries, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _pause_point("history:written")
        os.replace(tmp, directory / HISTORY_FILE)
        _pause_point("history:replaced")
        _fsync_dir(directory)

    # ----------------------------------------------------------------- pruning
    def prune(self, name: str, keep: int) -> list[str]:
        """Delete old versions, keeping the newest ``keep`` versions, the last ``keep``
        promoted versions, ``current`` and the version a rollback would go back to.

        Returns:
            The deleted versions.
        """
        if keep < 1:
            raise RepositoryError(f"keep must be >= 1, got {keep}")
        directory = self.model_dir(name)
        deleted: list[str] = []
        with self._locked(name):
            versions = self.list_versions(name)
            kept = self._protected(name, versions, keep)
            for version in versions:
                if version in kept:
                    continue
                # Rename first so the version disappears in one step, then delete.
                doomed = directory / f".deleting-{version}-{uuid.uuid4().hex[:8]}"
                os.rename(directory / version, doomed)
                _pause_point("prune:renamed")
                shutil.rmtree(doomed, ignore_errors=True)
                deleted.append(version)
            if deleted:
                _fsync_dir(directory)
            self._remove_abandoned(directory)
        return deleted

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

    @staticmethod
    def _remove_abandoned(directory: Path) -> None:
        """Remove leftovers of killed processes (called under the lock): temporary
        pointer/history files, half-deleted versions, and staging directories (and
        empty reserved version names) untouched for a day."""
        cutoff = time.time() - ABANDONED_AFTER_SECONDS
        for p in directory.iterdir():
            try:
                if p.name.startswith((f".{CURRENT}-", f".{HISTORY_FILE}-")):
                    p.unlink()  # a killed flip's temporary (they exist only under the lock)
                elif p.name.startswith(".deleting-") or (
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
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fh = open(directory / LOCK_FILE, "a")  # noqa: SIM115 (closed below)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ReadOnlyRepositoryError(
                    f"model repository {self.root} is read-only here ({exc.strerror}): "
                    f"only its writer changes it; run `rocketrank models rollback --repo "
                    f"{self.root} --name {name}` where it is writable (Kubernetes: the "
                    "rocketrank-rollback Job, deploy/k8s/rollback-job.yaml)"
                ) from None
            raise
        with fh:
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


def rollback(repo: str | Path, name: str, expect_current: str | None = None) -> str:
    return ModelRepository(repo).rollback(name, expect_current=expect_current)


__all__ = [
    "CURRENT",
    "HISTORY_FILE",
    "ArtifactError",
    "BrokenPointerError",
    "ModelRepository",
    "ReadOnlyRepositoryError",
    "RepositoryError",
    "current_version",
    "list_versions",
    "promote",
    "resolve_current",
    "rollback",
    "version_sort_key",
]

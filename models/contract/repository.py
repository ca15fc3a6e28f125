"""The model repository: versioned artifacts on a file system, with an atomic pointer.

:class:`ModelRepository` publishes, promotes, rolls back and prunes; the layout,
the version names and the read-only queries it inherits are in
``models.contract.repository_reader``.

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
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from models.contract.repository_fs import _fsync_dir, _fsync_tree, _pause_point, _remove_abandoned
from models.contract.repository_reader import (
    CURRENT,
    HISTORY_FILE,
    RepositoryError,
    RepositoryReader,
)
from models.contract.verify import verify_artifact

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HISTORY_KEPT = 1000
"""Promotions remembered (rollback can walk back this far)."""


class ReadOnlyRepositoryError(RepositoryError):
    """A write was asked of a repository mounted read-only here."""


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


class ModelRepository(RepositoryReader):
    """Versions of named models under one root directory: the writes, on top of
    :class:`RepositoryReader`'s queries.

    Args:
        root: the repository directory (created on first publish).
    """

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
            _remove_abandoned(directory)
        return deleted

    # ----------------------------------------------------------------- helpers
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
    "ModelRepository",
    "ReadOnlyRepositoryError",
    "current_version",
    "list_versions",
    "promote",
    "resolve_current",
    "rollback",
]

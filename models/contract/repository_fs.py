"""Crash safety of the repository writer on the file system.

fsync of files and directories (after a power cut, not only a killed process, a
version is complete or absent), removal of what a killed writer left behind, and
the test-only pause points at which a test SIGKILLs a writer
(``tests/suites/reliability/test_repository_kill.py``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from models.contract.repository_reader import _VERSION, CURRENT, HISTORY_FILE

ABANDONED_AFTER_SECONDS = 24 * 3600
"""Staging directories older than this are leftovers of a killed export."""


PAUSE_ENV = "RR_REPOSITORY_PAUSE_AT"
"""Tests only: the writer step (e.g. ``flip:replaced``) at which to stop and wait to be killed."""


def _pause_point(point: str) -> None:
    """Tests only: stop here, forever, when ``RR_REPOSITORY_PAUSE_AT`` names this step."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    marker = os.environ.get(PAUSE_ENV + "_FILE")
    if marker:
        Path(marker).write_text(point)
    while True:  # the test SIGKILLs the process here
        time.sleep(3600)


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

"""Model repository: atomic publish, the `current` pointer, rollback, pruning, CLI."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from models.contract.manifest import ArtifactError
from models.contract.repository import ModelRepository, resolve_current
from models.contract.repository_reader import CURRENT, RepositoryError, version_sort_key
from rocketrank.cli import main as cli
from tests.helpers.export import tiny_writer
from tests.helpers.signing import load_signed


@pytest.fixture()
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo")


def publish_n(repo: ModelRepository, n: int, name: str = "m", **kwargs) -> list[str]:
    return [repo.publish(name, tiny_writer(name, seed=i), **kwargs) for i in range(n)]


def test_publish_creates_complete_version_and_points_current_at_it(repo: ModelRepository):
    (v1,) = publish_n(repo, 1)
    assert version_sort_key(v1)  # a well-formed UTC timestamp version
    assert repo.list_versions("m") == [v1]
    assert repo.current_version("m") == v1
    pointer = repo.root / "m" / CURRENT
    assert pointer.is_symlink() and os.readlink(pointer) == v1  # relative: the repo can move
    artifact = load_signed(resolve_current(repo.root, "m"))
    assert artifact.manifest.version == v1
    # nothing but the version, the pointer, the history and the lock file is left behind
    leftovers = {p.name for p in (repo.root / "m").iterdir()} - {v1, CURRENT}
    assert leftovers == {"history.json", ".lock"}


def test_versions_in_one_second_get_suffixes_and_sort_numerically(repo: ModelRepository):
    versions = publish_n(repo, 3)
    assert repo.list_versions("m") == versions
    assert len(set(versions)) == 3
    assert version_sort_key("20260101T000000Z-10") > version_sort_key("20260101T000000Z-2")
    assert version_sort_key("20260101T000000Z-2") > version_sort_key("20260101T000000Z")


def test_failed_write_publishes_nothing_and_keeps_current(repo: ModelRepository):
    (v1,) = publish_n(repo, 1)

    def broken(directory: Path, version: str) -> None:
        (directory / "model.pt").write_bytes(b"half a model")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        repo.publish("m", broken)
    assert repo.list_versions("m") == [v1]
    assert repo.current_version("m") == v1
    assert {p.name for p in (repo.root / "m").iterdir()} == {v1, CURRENT, "history.json", ".lock"}


def test_unverifiable_staged_artifact_is_not_published(repo: ModelRepository):
    write = tiny_writer()

    def corrupting(directory: Path, version: str) -> None:
        write(directory, version)
        (directory / "encoder.json").write_text("{}")

    with pytest.raises(ArtifactError, match=r"checksum mismatch for encoder\.json"):
        repo.publish("m", corrupting)
    assert repo.list_versions("m") == []
    assert repo.current_version("m") is None


def test_promote_and_rollback_walk_the_history(repo: ModelRepository):
    v1, v2, v3 = publish_n(repo, 3)
    assert repo.current_version("m") == v3
    assert repo.rollback("m") == v2
    assert repo.current_version("m") == v2
    assert repo.rollback("m") == v1
    with pytest.raises(RepositoryError, match="no earlier promoted version"):
        repo.rollback("m")
    assert repo.current_version("m") == v1

    repo.promote("m", v3)
    repo.promote("m", v2)
    assert repo.rollback("m") == v3  # back to what was current before v2
    assert [e["version"] for e in repo.history("m")] == [v1, v3]


def test_prune_keeps_the_rollback_target_and_rollback_skips_deleted_versions(
    repo: ModelRepository,
):
    v1, v2, v3 = publish_n(repo, 3)
    repo.promote("m", v1)
    repo.promote("m", v3)  # history: v1 v2 v3 v1 v3
    assert repo.rollback_target("m") == v1
    # keep=1: v3 is newest and current, v1 is the rollback target (once pruned too)
    assert repo.prune("m", keep=1) == [v2]
    assert repo.list_versions("m") == [v1, v3]
    shutil.rmtree(repo.root / "m" / v1)  # deleted behind the repository's back
    with pytest.raises(RepositoryError, match="no earlier promoted version"):
        repo.rollback("m")


def test_promote_refuses_unknown_and_broken_versions(repo: ModelRepository):
    v1, v2 = publish_n(repo, 2)
    with pytest.raises(RepositoryError, match="no version '20000101T000000Z'"):
        repo.promote("m", "20000101T000000Z")
    with pytest.raises(RepositoryError, match="not a version name"):
        repo.promote("m", "../../etc")
    (repo.root / "m" / v1 / "model.pt").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match=r"model\.pt"):
        repo.promote("m", v1)
    assert repo.current_version("m") == v2


def test_keep_n_never_deletes_current(repo: ModelRepository):
    (v1,) = publish_n(repo, 1)
    publish_n(repo, 3, promote=False, keep=2)
    versions = repo.list_versions("m")
    assert len(versions) == 3 and versions[0] == v1  # 2 newest + current
    assert repo.current_version("m") == v1
    assert repo.prune("m", keep=1) == [versions[1]]
    assert repo.list_versions("m") == [v1, versions[2]]
    assert load_signed(repo.resolve_current("m")).version == v1


def test_current_pointer_is_never_missing_while_it_flips(repo: ModelRepository):
    v1, v2 = publish_n(repo, 2)
    pointer = repo.root / "m" / CURRENT
    seen: set[str] = set()
    missing: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(os.readlink(pointer))
            except OSError as exc:  # FileNotFoundError would mean a non-atomic flip
                missing.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            repo.promote("m", v1 if i % 2 else v2, verify=False)
    finally:
        stop.set()
        thread.join()
    assert missing == []
    assert seen <= {v1, v2}
    assert not [p for p in (repo.root / "m").iterdir() if p.name.startswith(".current-")]


def test_invalid_model_name_is_refused(repo: ModelRepository):
    with pytest.raises(RepositoryError, match="invalid model name"):
        repo.publish("../evil", tiny_writer())
    with pytest.raises(RepositoryError, match="no current version"):
        repo.resolve_current("nothing")


def test_models_cli_list_promote_rollback(repo: ModelRepository, capsys):
    v1, v2 = publish_n(repo, 2)
    publish_n(repo, 1, name="other")
    assert cli(["models", "list", "--repo", str(repo.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["version"], r["current"]) for r in rows if r["name"] == "m"] == [
        ("m", v1, False),
        ("m", v2, True),
    ]
    assert {r["name"] for r in rows} == {"m", "other"}

    assert cli(["models", "rollback", "--repo", str(repo.root), "--name", "m"]) == 0
    assert repo.current_version("m") == v1
    assert cli(["models", "promote", "--repo", str(repo.root), "--name", "m", "--version", v2]) == 0
    assert repo.current_version("m") == v2
    capsys.readouterr()
    assert (
        cli(
            [
                "models",
                "promote",
                "--repo",
                str(repo.root),
                "--name",
                "m",
                "--version",
                "20000101T000000Z",
            ]
        )
        == 1
    )
    assert "no version '20000101T000000Z'" in capsys.readouterr().out
    assert cli(["models", "list", "--repo", str(repo.root), "--name", "m"]) == 0
    out = capsys.readouterr().out
    assert f"* m            {v2}" in out


def test_prune_removes_leftovers_of_killed_exports(repo: ModelRepository):
    (v1,) = publish_n(repo, 1)
    model_dir = repo.root / "m"
    old_staging = model_dir / ".staging-20000101T000000Z-abc"
    new_staging = model_dir / ".staging-20990101T000000Z-def"  # an export still running
    half_deleted = model_dir / ".deleting-20000101T000000Z-1234"
    old_reserved = model_dir / "20000101T000000Z"  # reserved name, export killed
    for d in (old_staging, new_staging, half_deleted, old_reserved):
        d.mkdir()
    (old_staging / "model.pt").write_bytes(b"partial")
    day_ago = time.time() - 2 * 24 * 3600
    for d in (old_staging, old_reserved):
        os.utime(d, (day_ago, day_ago))
    assert repo.list_versions("m") == [v1]  # the empty reserved name is not a version
    repo.prune("m", keep=5)
    left = {p.name for p in model_dir.iterdir()}
    assert left == {v1, CURRENT, "history.json", ".lock", new_staging.name}

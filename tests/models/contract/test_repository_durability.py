"""Repository damage from outside: a truncated/empty history.json, `current` copied as
a directory, pruning and the rollback target, all-or-nothing rollback with an
expected source version, and a read-only mount."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models.contract.repository import ModelRepository, ReadOnlyRepositoryError
from models.contract.repository_reader import (
    CURRENT,
    HISTORY_FILE,
    BrokenPointerError,
    RepositoryError,
)
from rocketrank.cli import main as cli
from tests.helpers.export import tiny_writer
from tests.helpers.signing import load_signed


@pytest.fixture()
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo")


def publish_n(repo: ModelRepository, n: int, name: str = "m", **kwargs) -> list[str]:
    return [repo.publish(name, tiny_writer(name, seed=i), **kwargs) for i in range(n)]


@pytest.mark.parametrize("damage", [b"", b'[{"version": "2026', b"{}", b"\xff\xfe"])
def test_damaged_history_is_rebuilt_and_rewritten(repo, damage):
    v1, v2, v3 = publish_n(repo, 3)
    repo.promote("m", v2)  # current v2; v3 is newer but not current
    (repo.root / "m" / HISTORY_FILE).write_bytes(damage)
    rebuilt = repo.history("m")  # was JSONDecodeError, blocking every later operation
    assert [e["version"] for e in rebuilt] == [v1, v2]  # up to current
    assert {e["action"] for e in rebuilt} == {"repaired"}
    assert repo.rollback("m") == v1  # rollback works on the rebuilt history
    json.loads((repo.root / "m" / HISTORY_FILE).read_text())  # and wrote it back
    repo.promote("m", v3)
    (repo.root / "m" / HISTORY_FILE).write_bytes(damage)
    assert publish_n(repo, 1)  # publish + promote work too
    assert repo.prune("m", keep=1)


def test_current_as_a_directory_is_reported_and_repaired_by_the_next_promote(repo):
    v1, v2 = publish_n(repo, 2)
    pointer = repo.root / "m" / CURRENT
    copied = Path(str(pointer) + ".copy")
    shutil.copytree(pointer, copied)  # what a sync tool that follows symlinks leaves
    pointer.unlink()
    copied.rename(pointer)
    with pytest.raises(BrokenPointerError, match="is a directory") as err:
        repo.current_version("m")
    assert "rocketrank models promote" in str(err.value)  # names the fix
    assert repo.fallback_versions("m")[0] == v2  # the last promotion comes first
    assert load_signed(repo.version_dir("m", repo.fallback_versions("m")[0])).version == v2
    assert repo.prune("m", keep=1) == []  # nothing deleted while the pointer is broken...
    repo.promote("m", v1)  # ...and a promote replaces the directory with a symlink
    assert pointer.is_symlink() and repo.current_version("m") == v1
    repo.prune("m", keep=1)
    assert not [p for p in (repo.root / "m").iterdir() if p.name.startswith(".deleting-")]


def test_prune_keeps_last_k_promoted_and_the_rollback_target(repo):
    versions = publish_n(repo, 6)  # each promoted: history v0..v5
    repo.promote("m", versions[1])  # an old one back in production
    deleted = repo.prune("m", keep=2)
    # kept: newest 2 (v4, v5), last 2 promoted (v1, v5), rollback target (v5)
    assert repo.list_versions("m") == [versions[1], versions[4], versions[5]]
    assert sorted(deleted) == [versions[0], versions[2], versions[3]]
    assert repo.rollback("m") == versions[5]


def test_rollback_across_models_is_all_or_nothing(repo):
    c1, c2 = publish_n(repo, 2, name="coarse")
    (f1,) = publish_n(repo, 1, name="fine")  # fine has no earlier version
    with pytest.raises(RepositoryError, match="'fine': no earlier promoted version"):
        repo.rollback_all(["coarse", "fine"])
    assert repo.current_version("coarse") == c2  # coarse did not move
    (_f2,) = publish_n(repo, 1, name="fine")
    assert repo.rollback_all(["coarse", "fine"]) == {"coarse": c1, "fine": f1}


def test_expect_current_makes_a_retry_a_no_op(repo):
    _v1, v2, v3 = publish_n(repo, 3)
    assert repo.rollback("m", expect_current=v3) == v2
    assert repo.rollback("m", expect_current=v3) == v2  # retried: did not go on to v1
    assert repo.current_version("m") == v2
    c = publish_n(repo, 2, name="c")
    repo.rollback("c", expect_current=c[1])
    # one model already moved, the other not: someone else is moving pointers
    with pytest.raises(RepositoryError, match="nothing moved"):
        repo.rollback_all(["m", "c"], expect_current={"m": v2, "c": c[1]})
    assert repo.current_version("m") == v2


def test_rollback_cli_moves_every_name_or_none_and_retries_are_no_ops(repo, capsys):
    c1, c2 = publish_n(repo, 2, name="coarse")
    f1, f2 = publish_n(repo, 2, name="fine")
    argv = ["models", "rollback", "--repo", str(repo.root), "--name", "coarse", "--name", "fine"]
    expect = ["--expect-current", f"coarse={c2}", "--expect-current", f"fine={f2}"]
    assert cli([*argv, *expect]) == 0
    assert cli([*argv, *expect]) == 0  # the Job retried
    assert "nothing to do" in capsys.readouterr().out
    assert (repo.current_version("coarse"), repo.current_version("fine")) == (c1, f1)
    assert cli([*argv]) == 1  # no earlier versions left: refused, nothing moved
    assert (repo.current_version("coarse"), repo.current_version("fine")) == (c1, f1)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_writers_on_a_read_only_mount_name_the_writer_command(repo, tmp_path):
    """A real read-only bind mount (user + mount namespace via unshare)."""
    if not _unshare_works():
        pytest.skip("unshare -rm (user namespaces) is not available here")
    publish_n(repo, 2)
    code = (
        "from models.contract.repository import ModelRepository, ReadOnlyRepositoryError\n"
        f"repo = ModelRepository({str(repo.root)!r})\n"
        "try:\n"
        "    repo.rollback('m')\n"
        "except ReadOnlyRepositoryError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    script = tmp_path / "rollback.py"
    script.write_text(code)
    root = str(repo.root)
    shell = (
        f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && "
        f"{sys.executable} {script}"
    )
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "rocketrank models rollback" in out.stdout
    assert issubclass(ReadOnlyRepositoryError, RepositoryError)

"""kill -9 at every step of publish, promote, prune and rollback; a damaged
history.json and `current` copied as a directory: the repository still loads the
last good version, and the service still starts on it.

Each writer runs in a subprocess with ``RR_REPOSITORY_PAUSE_AT=<step>``
(``models/contract/repository_fs.py``): at that step it writes a marker file and
blocks; the test SIGKILLs it there, then checks the repository from outside.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.contract.repository import ModelRepository
from models.contract.repository_fs import PAUSE_ENV
from models.contract.repository_reader import CURRENT, HISTORY_FILE
from models.contract.signing import SIGNATURE_FILE, generate_key_pair
from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf
from tests.helpers.export import tiny_writer
from tests.helpers.repo import ROOT
from tests.helpers.signing import load_signed, sign

WRITER = """
import sys
from models.contract.repository import ModelRepository
from tests.helpers.export import tiny_writer
repo = ModelRepository(sys.argv[1])
op = sys.argv[2]
if op == "publish":
    repo.publish("m", tiny_writer("m", seed=99))
elif op == "promote":
    repo.promote("m", sys.argv[3])
elif op == "prune":
    repo.prune("m", keep=1)
elif op == "rollback":
    repo.rollback("m")
"""

FLIP_STEPS = ["flip:symlink-created", "flip:replaced", "history:written", "history:replaced"]
CASES = [
    *[("publish", s) for s in ["publish:staged", "publish:renamed", "publish:published"]],
    *[("publish", s) for s in FLIP_STEPS],
    *[("promote", s) for s in FLIP_STEPS],
    ("prune", "prune:renamed"),
    *[("rollback", s) for s in ["rollback:locked", "rollback:one-moved", *FLIP_STEPS]],
]


def _killed_at(repo: Path, op: str, step: str, tmp: Path, *args: str) -> None:
    marker = tmp / f"paused-{op}-{step.replace(':', '_')}"
    env = {**os.environ, PAUSE_ENV: step, PAUSE_ENV + "_FILE": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(repo), op, *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"{op} finished without reaching {step}: {out[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{op} did not reach {step}")
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize(("op", "step"), CASES, ids=[f"{o}-{s}" for o, s in CASES])
def test_sigkill_at_each_step_leaves_a_loadable_repository(tmp_path, op, step):
    repo = ModelRepository(tmp_path / "repo")
    versions = [repo.publish("m", tiny_writer("m", seed=i)) for i in range(3)]
    before = repo.current_version("m")
    _killed_at(repo.root, op, step, tmp_path, *([versions[0]] if op == "promote" else []))

    # what the service does at start-up: resolve `current`, verify, load
    now = repo.current_version("m")
    allowed = {before, versions[0], versions[1]} | set(repo.list_versions("m"))
    assert now in allowed
    assert load_signed(repo.resolve_current("m")).version == now
    assert isinstance(repo.history("m"), list)
    for version in repo.list_versions("m"):  # every visible version is complete
        load_signed(repo.version_dir("m", version))
    # and every later operation works, which also sweeps the leftovers
    new = repo.publish("m", tiny_writer("m", seed=7))
    assert repo.current_version("m") == new
    assert repo.rollback("m") != new
    repo.prune("m", keep=1)
    leftovers = [p.name for p in (tmp_path / "repo" / "m").iterdir() if p.name.startswith(".")]
    assert set(leftovers) <= {".lock"} | {p for p in leftovers if p.startswith(".staging-")}


def _world_client(world, **overrides) -> TestClient:
    settings = Settings(
        repo=world["repo"], features_dir=world["data"], reload_interval_s=0, item_refresh_s=0,
        **overrides,
    )  # fmt: skip
    return TestClient(create_app(settings))


def _served(client: TestClient) -> dict[str, str]:
    resp = client.get("/v1/models")
    assert resp.status_code == 200
    return {m["stage"]: m["version"] for m in resp.json()["models"]}


def test_service_starts_with_an_empty_history_and_current_copied_as_a_directory(tmp_path):
    world = sf.make_repo(tmp_path)
    repo = ModelRepository(world["repo"])
    good = {stage: repo.current_version(stage) for stage in ("coarse", "fine")}
    (world["repo"] / "coarse" / HISTORY_FILE).write_text("")  # truncated by a full disk
    pointer = world["repo"] / "fine" / CURRENT
    shutil.copytree(pointer, tmp_path / "copy")  # a sync tool copied the symlink's target
    pointer.unlink()
    (tmp_path / "copy").rename(pointer)
    with _world_client(world) as client:
        assert client.get("/readyz").status_code == 200
        assert _served(client) == good  # fine: the last good version, not a crash
        metrics = client.get("/metrics").text
        assert 'rocketrank_reloads_total{result="failed"} 1.0' in metrics  # the broken pointer


@pytest.mark.parametrize("damage", ["unsigned", "foreign_key"])
def test_service_refuses_unsigned_and_foreign_signed_versions_and_keeps_serving(tmp_path, damage):
    world = sf.make_repo(tmp_path)
    repo = ModelRepository(world["repo"])
    good = repo.current_version("fine")
    with _world_client(world, admin_token="t0ken") as client:
        version = sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=3)
        directory = repo.version_dir("fine", version)
        if damage == "unsigned":
            (directory / SIGNATURE_FILE).unlink()
        else:
            other, _ = generate_key_pair(tmp_path / "attacker")
            sign(directory, other)
        resp = client.post("/admin/reload", headers={"Authorization": "Bearer t0ken"})
        assert resp.status_code == 409
        fine = next(r for r in resp.json()["results"] if r["stage"] == "fine")
        assert fine["result"] == "failed" and fine["attempted"] == version
        assert "manifest.sig" in fine["error"] and str(tmp_path) not in fine["error"]
        assert _served(client)["fine"] == good


def test_unsigned_versions_load_only_when_explicitly_allowed(tmp_path):
    world = sf.make_repo(tmp_path)
    for stage in ("coarse", "fine"):
        (ModelRepository(world["repo"]).resolve_current(stage) / SIGNATURE_FILE).unlink()
    with _world_client(world) as client:
        assert client.get("/readyz").status_code == 503
    with _world_client(world, allow_unsigned_artifacts=True) as client:
        assert client.get("/readyz").status_code == 200


def test_admin_rollback_posted_to_two_replicas_moves_the_pointer_once(tmp_path):
    """Two workers on one repository (neither polls): a rollback POSTed to each moves
    `current` one step, not two — each passes the version it serves as the expected
    source, so the second only follows the pointer."""
    world = sf.make_repo(tmp_path)
    repo = ModelRepository(world["repo"])
    first = repo.current_version("fine")
    sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=4)
    sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=5)
    second, third = repo.list_versions("fine")[-2:]
    headers = {"Authorization": "Bearer t0ken"}
    with (
        _world_client(world, admin_token="t0ken") as a,
        _world_client(world, admin_token="t0ken") as b,
    ):
        assert _served(a)["fine"] == _served(b)["fine"] == third
        assert a.post("/admin/rollback", json={"stage": "fine"}, headers=headers).status_code == 200
        assert repo.current_version("fine") == second
        resp = b.post("/admin/rollback", json={"stage": "fine"}, headers=headers)
        assert resp.status_code == 200, resp.text
        assert repo.current_version("fine") == second  # before the fix: first
        assert _served(b)["fine"] == second  # b followed the pointer instead
    assert first != second

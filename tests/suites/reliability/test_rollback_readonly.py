"""Admin rollback on the shipped layout: `rocketrank serve` with the model repository
on a real read-only bind mount (a user + mount namespace from ``unshare -rm``, as
the Kubernetes Deployment mounts it). Before the fix, rollback opened ``.lock`` for
writing there and answered 500; now it is a 409 naming the writer command, nothing
moves, and the service keeps serving. The writer (``rocketrank models rollback``)
then moves the pointer and the service follows it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error

import pytest

from models.contract.repository import ModelRepository
from tests.helpers import service as sf
from tests.helpers import signing
from tests.helpers.net import free_port
from tests.helpers.repo import IN_CI, ROOT

TOKEN = "readonly-admin-token"
pytestmark = pytest.mark.slow


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _wait_ready(proc: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"service exited with {proc.returncode}:\n{out}")
        try:
            if sf.http("GET", base + "/readyz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError("service did not become ready")


def test_admin_rollback_on_a_read_only_mount_is_a_409_naming_the_writer(tmp_path):
    if not _unshare_works():
        message = "unshare -rm (user namespaces) is not available here"
        if IN_CI:
            pytest.fail(message)  # the CI machine has them: the read-only mount is tested there
        pytest.skip(message)
    world = sf.make_repo(tmp_path)
    repo = ModelRepository(world["repo"])
    first = repo.current_version("fine")
    second = sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=9)
    root = str(world["repo"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = (
        f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && exec "
        f"{sys.executable} -m rocketrank serve --host 127.0.0.1 --port {port}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")}
    env.update(
        signing.service_env(),
        ROCKETRANK_REPO=root,
        ROCKETRANK_FEATURES_DIR=str(world["data"]),
        ROCKETRANK_ADMIN_TOKEN=TOKEN,
        ROCKETRANK_RELOAD_INTERVAL_S="0.2",
    )
    proc = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", serve], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(proc, base)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        status, body = sf.http("POST", base + "/admin/rollback", {"stage": "fine"}, headers)
        assert status == 409, body
        assert "read-only" in body["detail"] and "rocketrank models rollback" in body["detail"]
        assert root not in body["detail"]  # paths are never revealed
        assert repo.current_version("fine") == second  # nothing moved
        status, models = sf.http("GET", base + "/v1/models")
        assert {m["stage"]: m["version"] for m in models["models"]}["fine"] == second

        # the writer, where the repository is writable, with the expected source version
        argv = ["models", "rollback", "--repo", root, "--name", "fine"]
        writer = [sys.executable, "-m", "rocketrank", *argv, "--expect-current", second]
        for _ in range(2):  # the second run is a retry: a no-op
            subprocess.run(writer, cwd=ROOT, check=True, capture_output=True, timeout=120)
        assert repo.current_version("fine") == first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the service follows the pointer
            status, models = sf.http("GET", base + "/v1/models")
            if {m["stage"]: m["version"] for m in models["models"]}["fine"] == first:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the service did not follow the rolled-back pointer")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

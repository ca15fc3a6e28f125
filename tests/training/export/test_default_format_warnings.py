"""The default export and serve path emits no DeprecationWarning (torch 2.13 deprecates
every TorchScript call: script, freeze, save, load).

Two subprocesses run with ``-W error::DeprecationWarning`` (every DeprecationWarning,
torch's included, is an error): ``rocketrank export`` with the default format for a
two-tower and an MLP run, then a script that starts the service on that repository and
scores a JSON and a binary ``/v1/rank`` request per stage — with no C compiler on
``PATH``, like the serving image — and checks that neither
AOTInductor's loader nor inductor's compile entry point was imported
(``torch.export.load`` itself imports ``torch._dynamo`` and ``aot_autograd``, and with
them inductor's config, utilities and ``codecache`` modules, which emit no warning).
The same export with ``--format torchscript`` fails under the same flag, so the flag
does catch torch's warnings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.contract.manifest import read_manifest
from tests.helpers.export import N_USERS, make_run, write_items, write_run_dir
from tests.helpers.repo import ROOT

pytestmark = pytest.mark.slow  # subprocesses that import torch and the service

STRICT = [sys.executable, "-W", "error::DeprecationWarning"]

SERVE = """
import shutil
import sys
# like the serving image (python:slim): no C compiler on PATH
assert not [c for c in ("cc", "gcc", "g++", "clang") if shutil.which(c)], "a compiler is on PATH"
import numpy as np
from fastapi.testclient import TestClient
from service.api import binary
from service.app import create_app
from service.settings import Settings

COMPILER = ("torch._inductor.package", "torch._inductor.compile_fx")
settings = Settings(repo=sys.argv[1], features_dir=sys.argv[2], reload_interval_s=0)
ids = np.arange(1000, 1300, dtype=np.int64)
with TestClient(create_app(settings)) as client:
    for stage in ("coarse", "fine", "cascade"):
        params = {"user_id": 7, "context": {"hour": 20}, "stage": stage, "top_k": 10}
        r = client.post("/v1/rank", json={**params, "candidates": ids.tolist()})
        assert r.status_code == 200, r.text
        body, length = binary.encode_request(ids, params, binary_output=True)
        headers = {"Content-Type": binary.MEDIA_TYPE, binary.HEADER_LENGTH: str(length)}
        r = client.post("/v1/rank", content=body, headers=headers)
        assert r.status_code == 200, r.text
    versions = sorted(m["stage"] for m in client.get("/v1/models").json()["models"])
# torch.export.load imports torch._dynamo and aot_autograd, which import inductor's
# config, utils and codecache modules; the AOTInductor loader and the compiler's entry
# point must not be needed to serve the default.
compiler = sorted(m for m in COMPILER if m in sys.modules)
assert not compiler, f"the default path imported {compiler}"
print("served", versions)
"""


def _export(run_dir: Path, repo: Path, name: str, items: Path, *extra: str):
    cmd = [*STRICT, "-m", "rocketrank", "export", "--run", str(run_dir), "--repo", str(repo)]
    cmd += ["--name", name, "--items", str(items), "--parity-rows", "256", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_default_export_and_serve_emit_no_deprecation_warning(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    items = write_items(data / "items.parquet")
    rng = np.random.default_rng(5)
    users = {"user_id": np.arange(N_USERS, dtype=np.int64), "user_age": rng.normal(35, 10, N_USERS)}
    pd.DataFrame(users).to_parquet(data / "users.parquet", index=False)
    repo = tmp_path / "repo"
    for name, kind in (("coarse", "two_tower"), ("fine", "mlp")):
        run_dir = write_run_dir(make_run(tmp_path, kind, seed=3))
        done = _export(run_dir, repo, name, items)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "format export" in done.stdout
    no_compiler = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    served = subprocess.run(
        [*STRICT, "-c", SERVE, str(repo), str(data)],
        cwd=ROOT,
        env=no_compiler,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stdout + served.stderr
    assert "served ['coarse', 'fine']" in served.stdout
    manifests = [read_manifest(p.resolve()) for p in repo.glob("*/current")]
    assert sorted(m.format for m in manifests) == ["export", "export"]

    # the control: TorchScript under the same flag stops at torch's first DeprecationWarning
    legacy = _export(run_dir, tmp_path / "legacy", "fine", items, "--format", "torchscript")
    assert legacy.returncode != 0
    assert "DeprecationWarning" in legacy.stderr and "torch" in legacy.stderr

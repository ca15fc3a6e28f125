"""The docker-compose pipeline, run without Docker: what each compose service
would run, with its environment from docker-compose.yml and its volumes mapped
to temporary folders.

trainer (deploy/docker/train_and_export.sh: synthetic log, joint training and
export of both stages, tiny sizes) -> features (`rocketrank features load` into
the real Redis, private key prefix) -> service (`rocketrank serve` with the
compose environment) -> a cascade request over real catalogue ids.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from models.contract.signing import generate_key_pair
from tests.helpers.deploy import COMPOSE_FILE, ROOT, TRAIN_SCRIPT, parse_cli
from tests.helpers.service import ServiceProcess, http

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _volume_paths(compose: dict, service: str, volumes: dict[str, Path]) -> dict[str, Path]:
    """Container path -> host folder for a service's named volumes."""
    paths = {}
    for spec in compose["services"][service].get("volumes", []):
        source, target = spec.split(":")[:2]
        if source in volumes:
            paths[target] = volumes[source]
    return paths


def _without_rocketrank_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")}


def test_compose_pipeline_trains_loads_and_serves(tmp_path: Path, redis_url: str) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services = compose["services"]
    volumes = {name: tmp_path / name for name in compose["volumes"]}
    for folder in volumes.values():
        folder.mkdir()

    # trainer: the compose environment, smaller sizes, container paths -> temp folders
    trainer_paths = _volume_paths(compose, "trainer", volumes)
    env = {
        **_without_rocketrank_env(),
        **services["trainer"]["environment"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DATA_DIR": str(trainer_paths["/data"]),
        "RUNS_DIR": str(trainer_paths["/runs"]),
        "MODEL_REPO": str(trainer_paths["/models"]),
        "CONFIG_DIR": str(ROOT / "configs"),
        "SYNTH_ROWS": "3000",
        "TRAIN_EPOCHS": "1",
    }
    # keygen: the compose command, its container folders -> the temp volumes
    keygen = parse_cli(services["keygen"]["entrypoint"][1:] + services["keygen"]["command"])
    keygen_paths = _volume_paths(compose, "keygen", volumes)
    private_dir, public_dir = keygen_paths[str(keygen.out)], keygen_paths[str(keygen.public_out)]
    generate_key_pair(private_dir, public_dir)
    env["ROCKETRANK_SIGNING_KEY"] = str(
        trainer_paths[str(Path(env["ROCKETRANK_SIGNING_KEY"]).parent)] / "signing.key"
    )
    result = subprocess.run(
        ["sh", str(TRAIN_SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    repo = volumes["models"]
    current = {stage: (repo / stage / "current").resolve().name for stage in ("coarse", "fine")}

    # features: the compose command against the real Redis, under a private prefix
    prefix = f"rocketrank-test:{uuid.uuid4().hex[:12]}:"
    feature_args = parse_cli(services["features"]["command"])
    data = _volume_paths(compose, "features", volumes)[str(feature_args.data)]
    command = [
        "features", "load", "--redis", redis_url, "--data", str(data), "--prefix", prefix,
    ]  # fmt: skip
    loaded = subprocess.run(
        [sys.executable, "-m", "rocketrank", *command], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env=_without_rocketrank_env(),
    )  # fmt: skip
    try:
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr

        # service: the compose environment, Redis and paths swapped for the test's
        service_env = {k: v for k, v in services["service"]["environment"].items() if v}
        service_paths = _volume_paths(compose, "service", volumes)
        service_env.update(
            ROCKETRANK_REPO=str(service_paths[service_env["ROCKETRANK_REPO"]]),
            ROCKETRANK_REDIS_URL=redis_url,
            ROCKETRANK_REDIS_PREFIX=prefix,
            ROCKETRANK_ARTIFACT_PUBLIC_KEY=str(
                service_paths[str(Path(service_env["ROCKETRANK_ARTIFACT_PUBLIC_KEY"]).parent)]
                / "signing.pub"
            ),
        )
        service = ServiceProcess([], env=service_env)
        try:
            service.wait_ready(timeout=120)
            status, models = http("GET", service.base + "/v1/models")
            assert status == 200
            served = {m["stage"]: m["version"] for m in models["models"]}
            assert served == current

            items = pd.read_parquet(data / "items.parquet", columns=["item_id"])["item_id"]
            users = pd.read_parquet(data / "users.parquet", columns=["user_id"])["user_id"]
            body = {
                "user_id": int(users.iloc[0]),
                "candidates": [int(i) for i in items.iloc[:300]],
                "stage": "cascade",
                "coarse_top_k": 50,
                "top_k": 10,
            }
            status, answer = http("POST", service.base + "/v1/rank", body)
            assert status == 200, answer
            assert answer["model_versions"] == current
            assert answer["degraded"] is False and answer["unknown_item_ids"] == []
            scores = [item["score"] for item in answer["items"]]
            assert len(scores) == 10 and scores == sorted(scores, reverse=True)
            assert {item["item_id"] for item in answer["items"]} <= set(body["candidates"])
        finally:
            service.stop()
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

"""Hot reload, refusal of broken artifacts, rollback (TestClient, lifespan running)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from models.contract.repository import ModelRepository
from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = int(sf.USER_IDS[1])
IDS = [int(i) for i in sf.ITEM_IDS[:20]]


@pytest.fixture()
def world(tmp_path) -> dict[str, Any]:
    return sf.make_repo(tmp_path)


def make_client(world: dict[str, Any], **overrides: Any) -> TestClient:
    base = {
        "repo": world["repo"],
        "features_dir": world["data"],
        "reload_interval_s": 0,
        "item_refresh_s": 0,
        "admin_token": TOKEN,
    }
    settings = Settings(**{**base, **overrides})
    return TestClient(create_app(settings))


def fine_scores(client: TestClient) -> tuple[str, dict[int, float]]:
    resp = client.post("/v1/rank", json={"user_id": USER, "candidates": IDS, "stage": "fine"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["model_versions"]["fine"], {it["item_id"]: it["score"] for it in body["items"]}


def expected_fine(world: dict[str, Any], version: str) -> np.ndarray:
    return sf.reference_scores(
        world["repo"], "fine", version, sf.user_row(world["users"], USER), {},
        sf.item_rows(world["items"], IDS),
    )  # fmt: skip


def metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    raise AssertionError(f"{name}{labels} not exposed")


def publish_fine(world: dict[str, Any], **kwargs: Any) -> str:
    return sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], **kwargs)


def test_admin_reload_serves_the_new_version_and_updates_model_info(world):
    old = world["versions"]["fine"]
    with make_client(world) as client:
        assert fine_scores(client)[0] == old
        new = publish_fine(world, seed=7)
        resp = client.post("/admin/reload", headers=AUTH)
        assert resp.status_code == 200
        fine = next(r for r in resp.json()["results"] if r["stage"] == "fine")
        assert fine == {
            "stage": "fine", "name": "fine", "result": "success",
            "version": new, "attempted": new, "error": None,
        }  # fmt: skip
        version, scores = fine_scores(client)
        assert version == new
        np.testing.assert_allclose([scores[i] for i in IDS], expected_fine(world, new), atol=1e-5)
        assert metric(client, "rocketrank_model_info", stage="fine", version=new) == 1
        assert metric(client, "rocketrank_model_info", stage="fine", version=old) == 0
        assert metric(client, "rocketrank_reloads_total", result="success") == 3


@pytest.mark.parametrize(
    ("broken", "reason"),
    [({"corrupt": True}, "checksum mismatch"), ({"poison": True}, "non-finite")],
    ids=["checksum", "nan-scores"],
)
def test_a_broken_artifact_is_refused_and_the_old_version_keeps_serving(world, broken, reason):
    old = world["versions"]["fine"]
    with make_client(world) as client:
        _, before = fine_scores(client)
        bad = publish_fine(world, seed=9, **broken)
        resp = client.post("/admin/reload", headers=AUTH)
        assert resp.status_code == 409
        fine = next(r for r in resp.json()["results"] if r["stage"] == "fine")
        assert fine["result"] == "failed"
        assert fine["version"] == old and fine["attempted"] == bad
        assert reason in fine["error"]
        assert str(world["repo"]) not in resp.text  # no file-system paths in answers
        version, after = fine_scores(client)
        assert version == old
        assert after == before
        assert metric(client, "rocketrank_reloads_total", result="failed") == 1
        # the refused version is not retried on every poll
        again = client.post("/admin/reload", headers=AUTH).json()["results"]
        assert {r["result"] for r in again} == {"unchanged"}
        assert metric(client, "rocketrank_reloads_total", result="failed") == 1
        assert client.get("/readyz").status_code == 200


def test_the_watcher_follows_the_current_pointer(world):
    with make_client(world, reload_interval_s=0.1) as client:
        new = publish_fine(world, seed=11)
        deadline = time.monotonic() + 30
        while fine_scores(client)[0] != new:
            assert time.monotonic() < deadline, "the new version was never picked up"
            time.sleep(0.05)


def test_rollback_moves_the_pointer_back_and_serves_the_previous_version(world):
    old = world["versions"]["fine"]
    with make_client(world) as client:
        new = publish_fine(world, seed=13)
        client.post("/admin/reload", headers=AUTH)
        assert fine_scores(client)[0] == new
        resp = client.post("/admin/rollback", headers=AUTH, json={"stage": "fine"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["results"][0]["version"] == old
        assert ModelRepository(world["repo"]).current_version("fine") == old
        version, scores = fine_scores(client)
        assert version == old
        np.testing.assert_allclose([scores[i] for i in IDS], expected_fine(world, old), atol=1e-5)
        # nothing older than the first version: a clear 409, nothing changes
        resp = client.post("/admin/rollback", headers=AUTH, json={"stage": "fine"})
        assert resp.status_code == 409
        assert "roll back" in resp.json()["detail"]
        assert str(world["repo"]) not in resp.text
        assert fine_scores(client)[0] == old


def test_requests_during_a_reload_use_one_consistent_model(world):
    """A request holds one snapshot: its answer is entirely the old or the new version."""
    from concurrent.futures import ThreadPoolExecutor

    with make_client(world) as client:
        old = world["versions"]["fine"]
        expected = {old: expected_fine(world, old)}

        def hammer(n: int) -> list[tuple[int, str, dict[int, float]]]:
            out = []
            for _ in range(n):
                resp = client.post(
                    "/v1/rank", json={"user_id": USER, "candidates": IDS, "stage": "fine"}
                )
                body = resp.json()
                out.append(
                    (
                        resp.status_code,
                        body.get("model_versions", {}).get("fine"),
                        {it["item_id"]: it["score"] for it in body.get("items", [])},
                    )
                )
            return out

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(hammer, 40) for _ in range(2)]
            for seed in (21, 22):
                version = publish_fine(world, seed=seed)
                expected[version] = expected_fine(world, version)
                assert client.post("/admin/reload", headers=AUTH).status_code == 200
            results = [r for f in futures for r in f.result()]
        assert all(status == 200 for status, _, _ in results)
        for _, version, scores in results:
            np.testing.assert_allclose([scores[i] for i in IDS], expected[version], atol=1e-5)

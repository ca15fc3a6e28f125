"""Train/serve parity: scores from ``/v1/rank`` equal the trained light net's.

A trained-looking run (``tests.helpers.export``) is exported with the real exporter
(``training.export``) into a repository; the service loads those artifacts
with its own code path (feature store rows → the artifact's encoder →
the exported programs or TorchScript, precomputed item vectors for the coarse stage)
and must give the same probabilities as the trained model on the same raw rows, within
1e-5 — for every artifact format (``export``, the default, and the deprecated
``torchscript``) and both body encodings (JSON, and the binary tensor body with a
binary answer).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from service.api import binary
from service.app import create_app
from service.settings import Settings
from tests.helpers.export import N_USERS, encoded, item_columns, make_run, write_items
from training.export.export import ExportOptions, export_run

USERS = [0, 7, 42]
HOURS = [3, 20]


@pytest.fixture(scope="module", params=["export", "torchscript"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp(f"parity-{request.param}")
    data = root / "data"
    data.mkdir()
    items_path = write_items(data / "items.parquet")
    rng = np.random.default_rng(5)
    users = pd.DataFrame(
        {"user_id": np.arange(N_USERS, dtype=np.int64), "user_age": rng.normal(35, 10, N_USERS)}
    )
    users.to_parquet(data / "users.parquet", index=False)
    runs = {
        "coarse": make_run(root, "two_tower", seed=3),
        "fine": make_run(root, "mlp", seed=4),
    }
    for name, run in runs.items():
        options = ExportOptions(items=items_path, parity_rows=256, format=request.param)
        result = export_run(run, root / "repo", name, options)
        assert result.manifest.format == request.param
    return {"root": root, "data": data, "repo": root / "repo", "users": users, "runs": runs}


def trained_probabilities(
    run: Any, users: pd.DataFrame, user_id: int, hour: int, item_ids: np.ndarray
) -> np.ndarray:
    """sigmoid of the trained JointModel's light logits on the raw rows."""
    catalogue = item_columns()
    position = {int(i): k for k, i in enumerate(catalogue["item_id"])}
    pick = np.array([position[int(i)] for i in item_ids])
    n = len(pick)
    age = float(users.loc[users["user_id"] == user_id, "user_age"].iloc[0])
    rows = {
        "user_id": np.full(n, user_id, dtype=np.int64),
        "user_age": np.full(n, age),
        "hour": np.full(n, hour, dtype=np.int64),
        **{name: catalogue[name][pick] for name in ("item_id", "tags", "price")},
        # privileged features: the light net never reads them
        "user_cat_clicks": np.zeros(n, dtype=np.int64),
        "dwell": np.zeros(n),
    }
    with torch.no_grad():
        return torch.sigmoid(run.model(encoded(run.encoder, rows))).numpy()


def rank(client: TestClient, params: dict[str, Any], ids: np.ndarray, encoding: str) -> dict:
    """``{item id: score}`` of one ``/v1/rank`` call with a JSON or a binary body."""
    if encoding == "json":
        resp = client.post("/v1/rank", json={**params, "candidates": ids.tolist()})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["unknown_item_ids"] == [] and not body["degraded"]
        return {it["item_id"]: it["score"] for it in body["items"]}
    content, length = binary.encode_request(ids, params, binary_output=True)
    headers = {"Content-Type": binary.MEDIA_TYPE, binary.HEADER_LENGTH: str(length)}
    resp = client.post("/v1/rank", content=content, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == binary.MEDIA_TYPE
    head, arrays = binary.decode_response(resp.content, int(resp.headers[binary.HEADER_LENGTH]))
    assert head["parameters"]["unknown_item_ids"] == [] and not head["parameters"]["degraded"]
    return dict(zip(arrays["item_ids"].tolist(), arrays["scores"].tolist(), strict=True))


@pytest.mark.parametrize("encoding", ["json", "binary"])
@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_rank_scores_equal_the_trained_light_net(exported, stage, encoding):
    settings = Settings(repo=exported["repo"], features_dir=exported["data"], reload_interval_s=0)
    candidates = np.sort(item_columns()["item_id"])[::3][:80]
    with TestClient(create_app(settings)) as client:
        for user in USERS:
            for hour in HOURS:
                params = {"user_id": user, "context": {"hour": hour}, "stage": stage}
                got = rank(client, {**params, "top_k": len(candidates)}, candidates, encoding)
                want = trained_probabilities(
                    exported["runs"][stage], exported["users"], user, hour, candidates
                )
                served = np.array([got[int(i)] for i in candidates])
                np.testing.assert_allclose(served, want, rtol=0, atol=1e-5)


def test_cascade_uses_the_trained_nets_for_both_stages(exported):
    settings = Settings(repo=exported["repo"], features_dir=exported["data"], reload_interval_s=0)
    candidates = np.sort(item_columns()["item_id"])
    user, hour = 7, 20
    with TestClient(create_app(settings)) as client:
        body = client.post(
            "/v1/rank",
            json={
                "user_id": user,
                "context": {"hour": hour},
                "candidates": candidates.tolist(),
                "stage": "cascade",
                "coarse_top_k": 40,
                "top_k": 10,
            },
        ).json()
    coarse = trained_probabilities(
        exported["runs"]["coarse"], exported["users"], user, hour, candidates
    )
    fine = trained_probabilities(
        exported["runs"]["fine"], exported["users"], user, hour, candidates
    )
    survivors = np.argsort(-coarse, kind="stable")[:40]
    best = survivors[np.argsort(-fine[survivors], kind="stable")[:10]]
    assert [it["item_id"] for it in body["items"]] == candidates[best].tolist()
    np.testing.assert_allclose([it["score"] for it in body["items"]], fine[best], atol=1e-5)
    np.testing.assert_allclose(
        [it["coarse_score"] for it in body["items"]], coarse[best], atol=1e-5
    )

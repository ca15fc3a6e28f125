"""The rank API through TestClient (lifespan runs): semantics, validation, limits,
admin auth, OpenAPI, metrics. Scores are checked against the artifact's module
evaluated outside the service on the same raw rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings, SettingsError, load_settings
from tests.helpers import service as sf

USER = int(sf.USER_IDS[2])
CONTEXT = {"hour": 20, "device": "ios"}
TOKEN = "s3cret-token"


def settings_for(world: dict[str, Any], **overrides: Any) -> Settings:
    base = {
        "repo": world["repo"],
        "features_dir": world["data"],
        "reload_interval_s": 0,
        "item_refresh_s": 0,
        "max_candidates": 400,
        "max_fine_candidates": 100,
        "max_top_k": 50,
        "max_body_bytes": 64 * 1024,
        "rank_threads": 1,
    }
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-api"))


@pytest.fixture(scope="module")
def client(world: dict[str, Any]):
    with TestClient(create_app(settings_for(world, admin_token=TOKEN))) as c:
        yield c


def reference(world, stage: str, user: dict, context: dict, rows: list[dict]) -> np.ndarray:
    name = "coarse" if stage == "coarse" else "fine"
    return sf.reference_scores(world["repo"], name, world["versions"][name], user, context, rows)


def candidate_ids() -> list[int]:
    # known items, items missing from the two-tower export (vectors computed at load),
    # and one id unknown everywhere
    return (
        [int(i) for i in sf.ITEM_IDS[:50]] + [int(i) for i in sf.ITEM_IDS[-4:]] + [sf.UNKNOWN_ITEM]
    )


def rank(client: TestClient, **body: Any):
    payload = {"user_id": USER, "context": CONTEXT, "candidates": candidate_ids(), **body}
    return client.post("/v1/rank", json=payload)


# --------------------------------------------------------------------------- semantics


def test_cascade_keeps_coarse_top_k_then_orders_by_the_fine_model(client, world):
    resp = rank(client, stage="cascade", coarse_top_k=20, top_k=5, request_id="r-1")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    ids = candidate_ids()
    rows = sf.item_rows(world["items"], ids)
    user = sf.user_row(world["users"], USER)
    coarse = reference(world, "coarse", user, CONTEXT, rows)
    fine = reference(world, "fine", user, CONTEXT, rows)
    survivors = np.argsort(-coarse, kind="stable")[:20]
    best = survivors[np.argsort(-fine[survivors], kind="stable")[:5]]

    assert body["request_id"] == "r-1"
    assert body["stage"] == "cascade"
    assert body["model_versions"] == world["versions"]
    assert [it["item_id"] for it in body["items"]] == [ids[i] for i in best]
    np.testing.assert_allclose([it["score"] for it in body["items"]], fine[best], atol=1e-5)
    np.testing.assert_allclose(
        [it["coarse_score"] for it in body["items"]], coarse[best], atol=1e-5
    )
    assert body["unknown_item_ids"] == [sf.UNKNOWN_ITEM]
    assert body["degraded"] is False
    assert body["unknown_user"] is False
    for step in ("parse", "feature_fetch", "coarse_inference", "fine_inference", "serialize"):
        assert body["timing_ms"][step] >= 0


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_single_stage_scores_every_candidate_with_its_model(client, world, stage):
    resp = rank(client, stage=stage, top_k=50)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    ids = candidate_ids()
    expected = reference(
        world, stage, sf.user_row(world["users"], USER), CONTEXT, sf.item_rows(world["items"], ids)
    )
    order = np.argsort(-expected, kind="stable")[:50]
    got = {it["item_id"]: it["score"] for it in body["items"]}
    assert len(body["items"]) == 50
    assert set(got) == {ids[i] for i in order}
    np.testing.assert_allclose([got[ids[i]] for i in order], expected[order], atol=1e-5)
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert "coarse_score" not in body["items"][0]
    assert body["model_versions"] == {stage: world["versions"][stage]}


def test_missing_user_features_are_imputed_like_training(client, world):
    user_with_nan_age = int(sf.USER_IDS[3])
    resp = client.post(
        "/v1/rank",
        json={"user_id": user_with_nan_age, "candidates": candidate_ids()[:10], "stage": "fine"},
    )
    expected = reference(
        world, "fine", sf.user_row(world["users"], user_with_nan_age), {},
        sf.item_rows(world["items"], candidate_ids()[:10]),
    )  # fmt: skip
    assert resp.status_code == 200
    np.testing.assert_allclose(
        sorted((it["score"] for it in resp.json()["items"]), reverse=True),
        np.sort(expected)[::-1],
        atol=1e-5,
    )


def test_unknown_user_gets_default_features_and_is_reported(client, world):
    resp = client.post(
        "/v1/rank",
        json={"user_id": sf.UNKNOWN_USER, "candidates": candidate_ids()[:10], "stage": "coarse"},
    )
    body = resp.json()
    assert body["unknown_user"] is True
    expected = reference(
        world, "coarse", {"user_id": sf.UNKNOWN_USER}, {},
        sf.item_rows(world["items"], candidate_ids()[:10]),
    )  # fmt: skip
    got = {it["item_id"]: it["score"] for it in body["items"]}
    np.testing.assert_allclose([got[i] for i in candidate_ids()[:10]], expected, atol=1e-5)


@pytest.mark.parametrize("stage", ["coarse", "fine", "cascade"])
def test_inline_item_features_override_the_store(client, world, stage):
    known = int(sf.ITEM_IDS[5])
    override = {"price": 999.0, "category": 3, "tags": ["t1", "t2"]}
    plain = rank(client, stage=stage, candidates=[known, int(sf.ITEM_IDS[6])]).json()
    inline = rank(
        client,
        stage=stage,
        candidates=[{"item_id": known, "features": override}, int(sf.ITEM_IDS[6])],
    ).json()
    row = {**sf.item_rows(world["items"], [known])[0], **override}
    expected = reference(world, stage, sf.user_row(world["users"], USER), CONTEXT, [row])[0]
    got = {it["item_id"]: it["score"] for it in inline["items"]}
    before = {it["item_id"]: it["score"] for it in plain["items"]}
    assert got[known] == pytest.approx(float(expected), abs=1e-5)
    assert got[known] != pytest.approx(before[known], abs=1e-4)
    assert got[int(sf.ITEM_IDS[6])] == pytest.approx(before[int(sf.ITEM_IDS[6])], abs=1e-6)


def test_user_features_in_the_request_override_the_store(client, world):
    override = {"age": 99.0, "gender": "m"}
    resp = rank(client, stage="fine", user_features=override, candidates=candidate_ids()[:8])
    user = {**sf.user_row(world["users"], USER), **override}
    expected = reference(
        world, "fine", user, CONTEXT, sf.item_rows(world["items"], candidate_ids()[:8])
    )
    got = {it["item_id"]: it["score"] for it in resp.json()["items"]}
    np.testing.assert_allclose([got[i] for i in candidate_ids()[:8]], expected, atol=1e-5)


def test_top_k_larger_than_the_candidates_returns_them_all(client):
    body = rank(client, stage="cascade", candidates=candidate_ids()[:3], top_k=10).json()
    assert sorted(it["item_id"] for it in body["items"]) == sorted(candidate_ids()[:3])


# --------------------------------------------------------------------------- bad input

BAD_BODIES = [
    ({"candidates": [1]}, ["body", "user_id"]),
    ({"user_id": "12", "candidates": [1]}, ["body", "user_id"]),
    ({"user_id": 2**63, "candidates": [1]}, ["body", "user_id"]),
    ({"user_id": True, "candidates": [1]}, ["body", "user_id"]),
    ({"user_id": 1}, ["body", "candidates"]),
    ({"user_id": 1, "candidates": 5}, ["body", "candidates"]),
    ({"user_id": 1, "candidates": []}, ["body", "candidates"]),
    ({"user_id": 1, "candidates": [1, 2**63]}, ["body", "candidates", 1]),
    ({"user_id": 1, "candidates": [1, -(2**63) - 1]}, ["body", "candidates", 1]),
    ({"user_id": 1, "candidates": [1, "12"]}, ["body", "candidates", 1]),
    ({"user_id": 1, "candidates": [1, 1.5]}, ["body", "candidates", 1]),
    ({"user_id": 1, "candidates": [1, True]}, ["body", "candidates", 1]),
    ({"user_id": 1, "candidates": [1, None]}, ["body", "candidates", 1]),
    ({"user_id": 1, "candidates": [{"features": {}}]}, ["body", "candidates", 0, "item_id"]),
    ({"user_id": 1, "candidates": [{"item_id": 1, "colour": 2}]}, ["body", "candidates", 0]),
    ({"user_id": 1, "candidates": [1], "stage": "medium"}, ["body", "stage"]),
    ({"user_id": 1, "candidates": [1], "top_k": 0}, ["body", "top_k"]),
    ({"user_id": 1, "candidates": [1], "top_k": 51}, ["body", "top_k"]),
    ({"user_id": 1, "candidates": [1], "coarse_top_k": -1}, ["body", "coarse_top_k"]),
    ({"user_id": 1, "candidates": [1], "coarse_top_k": 401}, ["body", "coarse_top_k"]),
    ({"user_id": 1, "candidates": [1], "request_id": ""}, ["body", "request_id"]),
    ({"user_id": 1, "candidates": [1], "bogus": 1}, ["body", "bogus"]),
    ({"user_id": 1, "candidates": [1], "context": {"device": {"a": 1}}}, ["body", "context"]),
    (
        {"user_id": 1, "candidates": [1], "user_features": {"age": [1, 2]}},
        ["body", "user_features", "age"],
    ),
    (
        {"user_id": 1, "candidates": [{"item_id": 1, "features": {"price": [1]}}], "stage": "fine"},
        ["body", "candidates", 0, "features", "price"],
    ),
]


@pytest.mark.parametrize(("body", "loc"), BAD_BODIES, ids=[str(b[1]) for b in BAD_BODIES])
def test_each_invalid_field_is_a_422_naming_it(client, world, body, loc):
    resp = client.post("/v1/rank", json=body)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc for d in detail), detail
    assert "Traceback" not in resp.text
    assert str(world["repo"]) not in resp.text


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b"", b'"text"'], ids=["broken", "array", "empty", "string"]
)
def test_a_body_that_is_not_a_json_object_is_a_422(client, raw):
    resp = client.post("/v1/rank", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body"]


def test_only_json_content_types_are_accepted(client):
    body = b'{"user_id": 1, "candidates": [1]}'
    for ok in ("application/json", "application/json; charset=utf-8", "application/x+json"):
        assert (
            client.post("/v1/rank", content=body, headers={"content-type": ok}).status_code == 200
        )
    for bad in ("text/plain", "application/x-www-form-urlencoded"):
        resp = client.post("/v1/rank", content=body, headers={"content-type": bad})
        assert resp.status_code == 415
        assert "application/json" in resp.json()["detail"][0]["msg"]


def test_candidate_count_limits_are_422_with_the_limit_in_the_message(client):
    resp = rank(client, candidates=list(range(401)))
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "candidates"]
    assert "limit of 400" in resp.json()["detail"][0]["msg"]
    resp = rank(client, candidates=list(range(101)), stage="fine")
    assert resp.status_code == 422
    assert "limit of 100" in resp.json()["detail"][0]["msg"]
    assert rank(client, candidates=list(range(400)), stage="coarse").status_code == 200


def test_bodies_over_the_size_limit_are_413(client):
    padded = b'{"user_id": 1, "candidates": [1]' + b" " * (70 * 1024) + b"}"
    resp = client.post("/v1/rank", content=padded, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert "limit" in resp.json()["detail"][0]["msg"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"user_id": 1, "candidates": [1]'
        for _ in range(70):
            yield b" " * 1024
        yield b"}"

    resp = client.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_a_stage_without_a_configured_model_is_a_422(world):
    with TestClient(create_app(settings_for(world, fine_model=""))) as c:
        assert c.get("/readyz").status_code == 200
        resp = c.post("/v1/rank", json={"user_id": 1, "candidates": [1], "stage": "cascade"})
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["body", "stage"]
        ok = c.post("/v1/rank", json={"user_id": 1, "candidates": [1], "stage": "coarse"})
        assert ok.status_code == 200


# --------------------------------------------------------------------------- operations


def test_health_readiness_and_model_listing(client, world):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == world["versions"]
    listing = client.get("/v1/models").json()
    assert {(m["stage"], m["name"], m["version"]) for m in listing["models"]} == {
        ("coarse", "coarse", world["versions"]["coarse"]),
        ("fine", "fine", world["versions"]["fine"]),
    }
    assert listing["feature_store"]["kind"] == "embedded"
    assert listing["feature_store"]["items"] == sf.N_ITEMS


def test_readiness_is_false_without_models(tmp_path, world):
    empty_repo = tmp_path / "repo"
    empty_repo.mkdir()
    settings = settings_for(world, repo=empty_repo)
    with TestClient(create_app(settings)) as c:
        resp = c.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["missing"] == ["coarse", "fine"]
        rank_resp = c.post("/v1/rank", json={"user_id": 1, "candidates": [1]})
        assert rank_resp.status_code == 503


def test_admin_endpoints_need_the_bearer_token(client):
    assert client.post("/admin/reload").status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert client.post("/admin/reload", headers=bad).status_code == 403
    good = {"Authorization": f"Bearer {TOKEN}"}
    resp = client.post("/admin/reload", headers=good)
    assert resp.status_code == 200
    assert {r["result"] for r in resp.json()["results"]} == {"unchanged"}


def test_admin_endpoints_are_disabled_without_a_token(world):
    with TestClient(create_app(settings_for(world))) as c:
        headers = {"Authorization": "Bearer anything"}
        assert c.post("/admin/reload", headers=headers).status_code == 404
        assert c.post("/admin/rollback", headers=headers).status_code == 404


def test_openapi_documents_the_rank_body_with_examples(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/rank"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/RankRequest"}
    assert set(body["examples"]) == {"ids", "inline"}
    schemas = spec["components"]["schemas"]
    assert {"user_id", "candidates", "stage", "top_k"} <= set(schemas["RankRequest"]["properties"])
    assert "CandidateObject" in schemas
    assert "RankResponse" in schemas
    assert client.get("/docs").status_code == 200


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def test_metrics_expose_every_metric_with_its_labels_after_traffic(world):
    with TestClient(create_app(settings_for(world))) as c:
        rank(c, stage="cascade", coarse_top_k=10, top_k=3)
        c.post("/v1/rank", json={"user_id": sf.UNKNOWN_USER, "candidates": [1], "stage": "fine"})
        c.post("/v1/rank", json={"user_id": "x", "candidates": [1]})
        samples = _samples(c.get("/metrics").text)

    def value(metric: str, **labels: str) -> float:
        found = [v for n, lab, v in samples if n == metric and labels.items() <= lab.items()]
        assert found, f"{metric}{labels} not exposed"
        return found[0]

    p = "rocketrank_"
    assert value(p + "requests_total", stage="cascade", code="200") == 1
    assert value(p + "requests_total", stage="fine", code="200") == 1
    assert value(p + "requests_total", stage="invalid", code="422") == 1
    assert value(p + "request_duration_seconds_count", stage="cascade") == 1
    assert value(p + "request_duration_seconds_bucket", stage="cascade", le="0.0005") >= 0
    assert value(p + "request_duration_seconds_bucket", stage="cascade", le="1.0") == 1
    for step in ("feature_fetch", "coarse_inference", "fine_inference", "serialize"):
        assert value(p + "step_duration_seconds_count", step=step) >= 1
    assert value(p + "candidates_count", stage="cascade") == 1
    assert value(p + "candidates_sum", stage="cascade") == len(candidate_ids())
    assert value(p + "unknown_ids_total", side="item") == 2  # UNKNOWN_ITEM and id 1
    assert value(p + "unknown_ids_total", side="user") == 1
    assert value(p + "feature_store_errors_total", store="embedded") == 0
    assert value(p + "feature_store_duration_seconds_count", store="embedded") == 2
    assert value(p + "degraded_requests_total") == 0
    for stage in ("coarse", "fine"):
        version = world["versions"][stage]
        assert value(p + "model_info", stage=stage, name=stage, version=version) == 1
    assert value(p + "reloads_total", result="success") == 2
    assert value(p + "reloads_total", result="failed") == 0


# --------------------------------------------------------------------------- settings


def test_unknown_environment_settings_are_errors(monkeypatch, world):
    monkeypatch.setenv("ROCKETRANK_REPO", str(world["repo"]))
    monkeypatch.setenv("ROCKETRANK_FEATURES_DIR", str(world["data"]))
    monkeypatch.setenv("ROCKETRANK_REDIS_ULR", "redis://x")
    with pytest.raises(SettingsError, match="ROCKETRANK_REDIS_ULR"):
        load_settings()
    monkeypatch.delenv("ROCKETRANK_REDIS_ULR")
    monkeypatch.setenv("ROCKETRANK_MAX_CANDIDATES", "many")
    with pytest.raises(SettingsError, match="max_candidates"):
        load_settings()
    monkeypatch.setenv("ROCKETRANK_MAX_CANDIDATES", "123")
    assert load_settings().max_candidates == 123


def test_settings_reject_unknown_keys_and_need_a_feature_source(world):
    with pytest.raises(ValueError, match="bogus"):
        Settings(repo=world["repo"], features_dir=world["data"], bogus=1)
    with pytest.raises(ValueError, match="features_dir"):
        Settings(repo=world["repo"])


@pytest.mark.parametrize(
    "candidates",
    [[0, True], [1, False], [False], [10**12, 1.0], ["1"], [5, "a"], [2**64]],
    ids=["0-true", "1-false", "false", "float", "str", "str2", "uint64"],
)
def test_only_plain_json_integers_are_item_ids(client, candidates):
    resp = client.post("/v1/rank", json={"user_id": 1, "candidates": candidates})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"][:2] == ["body", "candidates"]


def test_int64_extremes_are_valid_ids_and_reported_unknown(client):
    ids = [0, 1, -1, 2**63 - 1, -(2**63)]
    body = client.post("/v1/rank", json={"user_id": -(2**63), "candidates": ids}).json()
    assert body["unknown_item_ids"] == ids
    assert sorted(it["item_id"] for it in body["items"]) == sorted(ids)


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_feature_maps = st.dictionaries(
    st.sampled_from(["age", "gender", "hour", "device", "price", "tags", "other"]), _json
)


@settings(max_examples=60, deadline=None)
@given(
    user_id=_json,
    candidates=st.lists(st.integers() | _json, max_size=6) | _json,
    user_features=_feature_maps | _json,
    context=_feature_maps | _json,
    stage=st.sampled_from(["coarse", "fine", "cascade"]) | _json,
    top_k=st.integers() | _json,
)
def test_arbitrary_json_bodies_never_cause_a_server_error(
    client, user_id, candidates, user_features, context, stage, top_k
):
    body = {
        "user_id": user_id,
        "candidates": candidates,
        "user_features": user_features,
        "context": context,
        "stage": stage,
        "top_k": top_k,
    }
    resp = client.post("/v1/rank", json=body)
    assert resp.status_code in (200, 422), resp.text
    assert "Traceback" not in resp.text


_inline = st.fixed_dictionaries(
    {"item_id": st.sampled_from([int(sf.ITEM_IDS[0]), sf.UNKNOWN_ITEM])},
    optional={"features": _feature_maps},
)


@settings(max_examples=60, deadline=None)
@given(
    user_features=_feature_maps,
    context=_feature_maps,
    candidates=st.lists(st.sampled_from(candidate_ids()) | _inline, min_size=1, max_size=6),
    stage=st.sampled_from(["coarse", "fine", "cascade"]),
)
def test_arbitrary_feature_values_are_scored_or_refused_never_a_server_error(
    client, user_features, context, candidates, stage
):
    body = {
        "user_id": USER,
        "candidates": candidates,
        "user_features": user_features,
        "context": context,
        "stage": stage,
    }
    resp = client.post("/v1/rank", json=body)
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code == 200:
        scores = [it["score"] for it in resp.json()["items"]]
        assert all(0.0 <= s <= 1.0 for s in scores)


def test_inline_features_follow_their_candidate_through_the_cascade(client, world):
    ids = candidate_ids()[:20]
    override = {"price": 1.0, "category": 11}
    candidates: list[Any] = list(ids)
    candidates[7] = {"item_id": ids[7], "features": override}
    body = rank(client, stage="cascade", candidates=candidates, coarse_top_k=20, top_k=20).json()
    rows = sf.item_rows(world["items"], ids)
    rows[7] = {**rows[7], **override}
    user = sf.user_row(world["users"], USER)
    fine = reference(world, "fine", user, CONTEXT, rows)
    coarse = reference(world, "coarse", user, CONTEXT, rows)
    got = {it["item_id"]: (it["score"], it["coarse_score"]) for it in body["items"]}
    np.testing.assert_allclose([got[i][0] for i in ids], fine, atol=1e-5)
    np.testing.assert_allclose([got[i][1] for i in ids], coarse, atol=1e-5)
    # the survivors are reordered by the coarse stage: position 7 is not position 7 there
    assert int(np.argsort(-coarse, kind="stable").tolist().index(7)) != 7

"""Hostile and malformed rank requests, written by hand (TestClient, lifespan running).

Each bad request is a 4xx whose ``detail`` names the field, never a 5xx, a
stack trace or a file path. Already covered in ``tests/service/api/test_endpoints.py`` and not
repeated here: every invalid top-level field, empty and non-list candidate
lists, ids that are strings, floats, bools, null or beyond int64, unknown
top-level and candidate-object keys, candidate-count limits, top_k limits, the
413 for oversized bodies (also over real HTTP in ``tests/service/test_http.py``) and
bodies that are not a JSON object.

Rules stated by these tests:

* Duplicate candidate ids are allowed: every occurrence is scored (identically,
  unless inline features differ) and returned; the caller owns de-duplication.
* Negative ids and ``-2**63`` are valid int64 ids: scored with defaults and
  listed in ``unknown_item_ids``.
* Numeric features take a JSON number or null; strings, bools and numbers
  beyond the float32 range are 422 naming the feature. ``NaN``/``Infinity``
  are not JSON and ``1e999`` overflows: 422 at ``["body"]``.
* Unknown keys are rejected at the top level and in candidate objects (422),
  but unknown *feature names* inside ``context``, ``user_features`` and inline
  ``features`` are ignored: models of different versions read different features.
* Content-Type must be JSON (``application/json`` or ``application/*+json``)
  when given: anything else is 415 naming the header.
* Duplicate keys in a JSON object: the last one wins (orjson, like ``json``).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

USER = int(sf.USER_IDS[3])
KNOWN = [int(i) for i in sf.ITEM_IDS[:5]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("badinput"))


@pytest.fixture(scope="module")
def client(world: dict[str, Any]):
    settings = Settings(
        repo=world["repo"],
        features_dir=world["data"],
        reload_interval_s=0,
        item_refresh_s=0,
        rank_threads=1,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def clean(resp, world: dict[str, Any]) -> None:
    """No stack trace and no file-system path in an answer."""
    assert resp.status_code < 500, resp.text
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    assert str(world["repo"]) not in resp.text and str(sf.ROOT) not in resp.text


def rank(client: TestClient, **body: Any):
    return client.post("/v1/rank", json={"user_id": USER, "candidates": KNOWN, **body})


# --------------------------------------------------------------------------- duplicates and ids


@pytest.mark.parametrize("stage", ["coarse", "fine", "cascade"])
def test_duplicate_ids_are_each_scored_and_returned(client, world, stage):
    ids = [KNOWN[0], KNOWN[1], KNOWN[0], KNOWN[0]]
    resp = rank(client, candidates=ids, stage=stage, top_k=10, coarse_top_k=10)
    clean(resp, world)
    assert resp.status_code == 200
    items = resp.json()["items"]
    assert sorted(it["item_id"] for it in items) == sorted(ids)
    assert len({it["score"] for it in items if it["item_id"] == KNOWN[0]}) == 1


def test_duplicate_ids_with_different_inline_features_score_differently(client, world):
    cands = [
        {"item_id": KNOWN[0], "features": {"price": 1.0}},
        {"item_id": KNOWN[0], "features": {"price": 5000.0}},
    ]
    resp = rank(client, candidates=cands, stage="fine", top_k=2)
    clean(resp, world)
    scores = [it["score"] for it in resp.json()["items"]]
    assert len(scores) == 2 and scores[0] != scores[1]


@pytest.mark.parametrize("item_id", [-1, -(2**63), 0])
def test_negative_and_extreme_int64_ids_are_valid_unknown_ids(client, world, item_id):
    resp = rank(client, candidates=[KNOWN[0], item_id], stage="cascade")
    clean(resp, world)
    assert resp.status_code == 200
    body = resp.json()
    assert body["unknown_item_ids"] == [item_id]
    assert {it["item_id"] for it in body["items"]} == {KNOWN[0], item_id}


@pytest.mark.parametrize(
    ("candidate", "loc"),
    [
        ({"item_id": 2**64}, ["body", "candidates", 0, "item_id"]),
        ({"item_id": "17"}, ["body", "candidates", 0, "item_id"]),
        ({"item_id": 1.5}, ["body", "candidates", 0, "item_id"]),
        ({"item_id": -(2**63) - 1}, ["body", "candidates", 0, "item_id"]),
    ],
    ids=["beyond-uint64", "string", "float", "below-int64"],
)
def test_candidate_object_ids_must_be_int64(client, world, candidate, loc):
    resp = rank(client, candidates=[candidate])
    clean(resp, world)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == loc


# --------------------------------------------------------------------------- numeric features


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"context": {"hour": "noon"}}, ["body", "context", "hour"]),
        ({"context": {"hour": True}}, ["body", "context", "hour"]),
        ({"context": {"hour": 1e300}}, ["body", "context", "hour"]),
        ({"context": {"hour": -1e300}, "stage": "fine"}, ["body", "context", "hour"]),
        ({"user_features": {"age": "old"}}, ["body", "user_features", "age"]),
        ({"user_features": {"age": 1e39}, "stage": "coarse"}, ["body", "user_features", "age"]),
        (
            {"candidates": [{"item_id": 1, "features": {"price": "cheap"}}], "stage": "fine"},
            ["body", "candidates", 0, "features", "price"],
        ),
        (
            {"candidates": [{"item_id": 1, "features": {"price": 1e300}}], "stage": "coarse"},
            ["body", "candidates", 0, "features", "price"],
        ),
    ],
    ids=[
        "string-context",
        "bool-context",
        "huge-context",
        "huge-negative-fine",
        "string-user",
        "beyond-float32-user",
        "string-inline",
        "huge-inline-coarse",
    ],
)
def test_non_numbers_in_numeric_features_are_422_naming_the_feature(client, world, body, loc):
    resp = rank(client, **body)
    clean(resp, world)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail[0]["loc"] == loc
    assert loc[-1] in detail[0]["msg"]


def test_null_and_large_finite_numbers_are_accepted_with_finite_scores(client, world):
    resp = rank(client, context={"hour": None}, user_features={"age": 3e38}, stage="cascade")
    clean(resp, world)
    assert resp.status_code == 200
    assert all(isinstance(it["score"], float) for it in resp.json()["items"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id": 1, "candidates": [1], "context": {"hour": NaN}}',
        b'{"user_id": 1, "candidates": [1], "context": {"hour": Infinity}}',
        b'{"user_id": 1, "candidates": [1], "context": {"hour": -Infinity}}',
        b'{"user_id": 1, "candidates": [1], "context": {"hour": 1e999}}',
        b'{"user_id": 1, "candidates": [1], "request_id": "\xff\xfe"}',
        b'{"user_id": 1, "candidates": [1], "context": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"user_id": 1, "candidates": [1],}',
    ],
    ids=["nan", "inf", "-inf", "overflow", "bad-utf8", "deep-nesting", "trailing-comma"],
)
def test_non_json_numbers_and_malformed_json_are_422_at_the_body(client, world, raw):
    resp = client.post("/v1/rank", content=raw, headers={"content-type": "application/json"})
    clean(resp, world)
    assert resp.status_code == 422
    # NaN / Infinity / an overflowing literal: the field holding it is named
    expected = ["body", "context", "hour"] if b'"hour"' in raw else ["body"]
    assert resp.json()["detail"][0]["loc"] == expected
    assert resp.json()["detail"][0]["type"] == "json_invalid"


# --------------------------------------------------------------------------- unknown names


def test_unknown_feature_names_inside_feature_maps_are_ignored(client, world):
    plain = rank(client, stage="fine", top_k=5).json()["items"]
    resp = rank(
        client,
        stage="fine",
        top_k=5,
        context={"weather": "rain"},
        user_features={"shoe_size": 44},
        candidates=[{"item_id": i, "features": {"colour": "red"}} for i in KNOWN],
    )
    clean(resp, world)
    assert resp.status_code == 200
    assert resp.json()["items"] == plain


def test_duplicate_json_keys_keep_the_last_value(client, world):
    raw = b'{"user_id": "x", "user_id": %d, "candidates": [%d]}' % (USER, KNOWN[0])
    resp = client.post("/v1/rank", content=raw, headers={"content-type": "application/json"})
    clean(resp, world)
    assert resp.status_code == 200


# --------------------------------------------------------------------------- content type


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_a_body_that_is_not_declared_json_is_415_naming_the_header(client, world, content_type):
    body = b'{"user_id": %d, "candidates": [%d]}' % (USER, KNOWN[0])
    resp = client.post("/v1/rank", content=body, headers={"content-type": content_type})
    clean(resp, world)
    assert resp.status_code == 415
    assert resp.json()["detail"][0]["loc"] == ["header", "content-type"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/x+json"])
def test_json_media_types_with_parameters_are_accepted(client, world, content_type):
    body = b'{"user_id": %d, "candidates": [%d]}' % (USER, KNOWN[0])
    resp = client.post("/v1/rank", content=body, headers={"content-type": content_type})
    assert resp.status_code == 200, resp.text


def test_wrong_methods_and_paths_are_4xx(client, world):
    for method, path, status in [
        ("GET", "/v1/rank", 405),
        ("PUT", "/v1/rank", 405),
        ("POST", "/v1/rank/../../etc/passwd", 404),
        ("GET", "/admin/reload", 405),
    ]:
        resp = client.request(method, path)
        clean(resp, world)
        assert resp.status_code == status, (method, path, resp.status_code)

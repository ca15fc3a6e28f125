"""Hostile input: every served feature (from GET /v1/models) × every JSON type × every
place a feature value can come from (context, user_features, a candidate's inline
features) × every stage. Never a 5xx; every 4xx names the field (``detail[].loc``
holds the feature's name, or the map/candidate holding it), and no answer carries a
stack trace. Default limits (4 MiB bodies, 1,024-character strings)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

USER = int(sf.USER_IDS[3])
IDS = [int(i) for i in sf.ITEM_IDS[:5]]
MB_STRING = "x" * (1 << 20)
# JSON text of each value (raw, so that NaN can be sent at all)
VALUES: dict[str, bytes] = {
    "null": b"null",
    "bool": b"true",
    "int": b"7",
    "huge_int": str(2**70).encode(),
    "negative_huge_int": str(-(2**70)).encode(),
    "float": b"2.5",
    "big_float": b"3e38",
    "nan_literal": b"NaN",
    "string": b'"ios"',
    "string_1mb": orjson.dumps(MB_STRING),
    "list": b'[1, "a", 2.5]',
    "list_of_lists": b"[[1], [2]]",
    "nested_object": b'{"a": {"b": 1}}',
    "empty_list": b"[]",
    "empty_object": b"{}",
}
PLACES = ("context", "user_features", "inline")
STAGES = ("coarse", "fine", "cascade")
answers: Counter = Counter()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("badinput-every"))


@pytest.fixture(scope="module")
def client(world):
    settings = Settings(
        repo=world["repo"], features_dir=world["data"], reload_interval_s=0, item_refresh_s=0
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def _report_answers():
    yield
    print(f"[badinput] every feature x every type: answers by status {dict(answers)}")


def served_features(client: TestClient) -> list[str]:
    models = client.get("/v1/models").json()["models"]
    names = {n for m in models for side in m["features"].values() for n in side}
    assert names  # the suite runs over what the service says it serves
    return sorted(names)


def body_with(place: str, name: str, raw: bytes, stage: str) -> bytes:
    features = b'{"' + name.encode() + b'": ' + raw + b"}"
    head = b'{"user_id": %d, "stage": "%s", ' % (USER, stage.encode())
    ids = orjson.dumps(IDS)
    if place == "inline":
        cand = b'[{"item_id": %d, "features": %s}, %s]' % (IDS[0], features, ids[1:-1])
        return head + b'"candidates": ' + cand + b"}"
    return head + b'"' + place.encode() + b'": ' + features + b', "candidates": ' + ids + b"}"


def expected_loc_prefix(place: str) -> list[Any]:
    return ["body", "candidates", 0, "features"] if place == "inline" else ["body", place]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", sorted(VALUES))
def test_every_feature_every_type_never_5xx_and_4xx_names_the_field(client, world, place, kind):
    for name in served_features(client):
        for stage in STAGES:
            resp = client.post(
                "/v1/rank",
                content=body_with(place, name, VALUES[kind], stage),
                headers={"content-type": "application/json"},
            )
            where = f"{place}.{name}={kind} stage={stage}"
            assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:300]}"
            text = resp.text
            assert "Traceback" not in text and str(world["repo"]) not in text, where
            answers[resp.status_code] += 1
            if resp.status_code == 200:
                scores = [it["score"] for it in resp.json()["items"]]
                assert all(isinstance(s, float) for s in scores), f"{where}: {scores[:3]}"
                continue
            assert resp.status_code == 422, f"{where}: {resp.status_code} {text[:300]}"
            detail = resp.json()["detail"]
            loc = detail[0]["loc"]
            assert loc[: len(expected_loc_prefix(place))] == expected_loc_prefix(place), (
                f"{where}: {loc}"
            )
            assert name in loc, f"{where}: {loc} does not name {name}"

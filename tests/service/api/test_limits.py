"""Bounded request cost: size limits of every feature value and map (422 naming the field,
checked before pydantic), multi-valued features refusing scalars, values that overflow
once standardised, and the cascade's coarse_top_k bounded by the fine limit."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

USER = int(sf.USER_IDS[2])
IDS = [int(i) for i in sf.ITEM_IDS[:10]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-limits"))


@pytest.fixture(scope="module")
def client(world):
    settings = Settings(
        repo=world["repo"], features_dir=world["data"], reload_interval_s=0, item_refresh_s=0,
        max_fine_candidates=100, max_body_bytes=8 * 1024 * 1024, rank_threads=1,
        max_string_length=100, max_list_length=8, max_map_size=16,
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        yield c


def post(client: TestClient, **body: Any):
    payload = {"user_id": USER, "candidates": IDS, "stage": "fine", **body}
    return client.post(
        "/v1/rank", content=orjson.dumps(payload), headers={"content-type": "application/json"}
    )


def assert_422(resp, loc: list) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == loc, resp.json()


def test_a_scalar_in_a_multi_valued_feature_is_a_422_naming_it(client):
    inline = [{"item_id": IDS[0], "features": {"tags": 5}}]
    assert_422(post(client, candidates=inline), ["body", "candidates", 0, "features", "tags"])
    for value in (5, 1.5, True):
        inline = [IDS[1], {"item_id": IDS[0], "features": {"tags": value}}]
        assert_422(post(client, candidates=inline), ["body", "candidates", 1, "features", "tags"])
    ok = [{"item_id": IDS[0], "features": {"tags": ["t1", "t2"]}}, {"item_id": IDS[1]}]
    assert post(client, candidates=ok).status_code == 200
    ok = [{"item_id": IDS[0], "features": {"tags": "t1"}}]  # a separator-joined string
    assert post(client, candidates=ok).status_code == 200


@pytest.mark.parametrize("where", ["context", "user_features", "inline"])
def test_long_strings_long_lists_and_big_maps_are_422_naming_the_field(client, where):
    def send(features: dict[str, Any]):
        if where == "inline":
            return post(client, candidates=[{"item_id": IDS[0], "features": features}])
        return post(client, **{where: features})

    prefix = ["body", "candidates", 0, "features"] if where == "inline" else ["body", where]
    assert_422(send({"device": "x" * 101}), [*prefix, "device"])
    assert_422(send({"tags": ["t1"] * 9}), [*prefix, "tags"])
    assert_422(send({"tags": ["t" * 101]}), [*prefix, "tags"])
    assert_422(send({f"f{i}": 1 for i in range(17)}), prefix)
    assert_422(send({"n" * 101: 1}), prefix)  # an unknown but huge feature name
    assert send({"device": "x" * 100, "tags": ["t1"] * 8}).status_code == 200


def test_a_huge_map_is_refused_before_pydantic_reads_it(client):
    resp = post(client, user_features={f"k{i}": i for i in range(300_000)})
    assert_422(resp, ["body", "user_features"])
    assert resp.json()["detail"][0]["type"] == "too_many_features"


def test_cascade_coarse_top_k_is_bounded_by_the_fine_limit(client):
    resp = post(client, stage="cascade", coarse_top_k=101)
    assert_422(resp, ["body", "coarse_top_k"])
    assert post(client, stage="cascade", coarse_top_k=100).status_code == 200


def test_values_that_overflow_once_standardised_are_422_not_null_scores(client):
    # Fault injection: a training std this small makes a float32 value overflow after
    # standardisation (the encoder's stats are those of the served model).
    fine = client.app.state.service.registry.snapshot()["fine"]
    stats = fine.encoder.stats
    saved = {n: dict(stats[n]) for n in ("hour", "age", "price")}
    try:
        for name in saved:
            stats[name]["std"] = 1e-40
        assert_422(post(client, context={"hour": 3e38}), ["body", "context", "hour"])
        assert_422(post(client, user_features={"age": 3e38}), ["body", "user_features", "age"])
        inline = [IDS[0], {"item_id": IDS[1], "features": {"price": 3e38}}]
        assert_422(post(client, candidates=inline), ["body", "candidates", 1, "features", "price"])
    finally:
        for name, value in saved.items():
            stats[name].clear()
            stats[name].update(value)
    body = post(client, context={"hour": 3e38}).json()
    assert all(isinstance(it["score"], float) for it in body["items"])

"""Binary rank bodies (KServe/Triton binary tensor extension) through TestClient:
the same answers as JSON, binary answers when asked, and a 4xx naming the field
for every kind of malformed binary body."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.api import binary
from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

USER = int(sf.USER_IDS[4])
CONTEXT = {"hour": 9, "device": "web"}
IDS = np.array([*sf.ITEM_IDS[:60], *sf.ITEM_IDS[-3:], sf.UNKNOWN_ITEM], dtype=np.int64)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-binary"))


@pytest.fixture(scope="module")
def client(world: dict[str, Any]):
    settings = Settings(
        repo=world["repo"],
        features_dir=world["data"],
        reload_interval_s=0,
        item_refresh_s=0,
        max_candidates=200,
        max_fine_candidates=100,
        max_top_k=50,
        rank_threads=1,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def post_binary(
    client,
    body: bytes,
    length: int | str | None,
    media: str = binary.MEDIA_TYPE,
    accept: str | None = None,
):
    headers = {"content-type": media}
    if length is not None:
        headers[binary.HEADER_LENGTH] = str(length)
    if accept:
        headers["accept"] = accept
    return client.post("/v1/rank", content=body, headers=headers)


def params(stage: str = "cascade", **extra: Any) -> dict[str, Any]:
    return {"user_id": USER, "context": CONTEXT, "stage": stage, "top_k": 20, **extra}


def header_and_tail(header: dict[str, Any], tail: bytes) -> tuple[bytes, int]:
    raw = orjson.dumps(header)
    return raw + tail, len(raw)


def ids_input(n: int, size: int | None = None, **overrides: Any) -> dict[str, Any]:
    spec = {
        "name": "candidate_ids",
        "datatype": "INT64",
        "shape": [n],
        "parameters": {"binary_data_size": 8 * n if size is None else size},
    }
    return {**spec, **overrides}


def loc_of(resp) -> list[Any]:
    return resp.json()["detail"][0]["loc"]


@pytest.mark.parametrize("stage", ["coarse", "fine", "cascade"])
def test_binary_body_ranks_exactly_like_json(client, stage):
    json_resp = client.post("/v1/rank", json={**params(stage), "candidates": IDS.tolist()})
    body, length = binary.encode_request(IDS, params(stage))
    bin_resp = post_binary(client, body, length)
    assert json_resp.status_code == bin_resp.status_code == 200
    assert bin_resp.headers["content-type"] == "application/json"
    a, b = json_resp.json(), bin_resp.json()
    assert a["items"] == b["items"] and len(a["items"]) == 20
    assert a["unknown_item_ids"] == b["unknown_item_ids"] == [sf.UNKNOWN_ITEM]


@pytest.mark.parametrize("ask", ["parameter", "accept", "outputs"])
def test_binary_answer_holds_the_json_answers_ids_and_scores(client, ask):
    expected = client.post("/v1/rank", json={**params(), "candidates": IDS.tolist()}).json()
    if ask == "parameter":
        body, length = binary.encode_request(IDS, params(), binary_output=True)
        resp = post_binary(client, body, length)
    elif ask == "accept":
        body, length = binary.encode_request(IDS, params())
        resp = post_binary(client, body, length, accept="application/octet-stream")
    else:
        header = {
            "parameters": params(),
            "inputs": [ids_input(len(IDS))],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
        body, length = header_and_tail(header, IDS.astype("<i8").tobytes())
        resp = post_binary(client, body, length, media="application/octet-stream")
    assert resp.status_code == 200
    assert resp.headers["content-type"] in binary.BINARY_MEDIA_TYPES
    head, arrays = binary.decode_response(resp.content, int(resp.headers[binary.HEADER_LENGTH]))
    assert head["parameters"]["request_id"] == head["id"]
    assert head["parameters"]["unknown_item_ids"] == expected["unknown_item_ids"]
    assert arrays["item_ids"].tolist() == [it["item_id"] for it in expected["items"]]
    # JSON carries the float32 score as a double: converting back is exact
    assert arrays["scores"].dtype == np.float32
    assert arrays["scores"].tolist() == [it["score"] for it in expected["items"]]
    assert arrays["coarse_scores"].tolist() == [it["coarse_score"] for it in expected["items"]]


def test_a_json_request_can_ask_for_a_binary_answer(client):
    resp = client.post(
        "/v1/rank",
        json={**params("coarse"), "candidates": IDS.tolist()},
        headers={"accept": binary.MEDIA_TYPE},
    )
    assert resp.status_code == 200 and resp.headers["content-type"] == binary.MEDIA_TYPE
    head, arrays = binary.decode_response(resp.content, int(resp.headers[binary.HEADER_LENGTH]))
    assert head["parameters"]["stage"] == "coarse" and "coarse_scores" not in arrays
    assert len(arrays["item_ids"]) == 20


def test_top_level_id_is_the_request_id_and_the_ids_array_needs_no_copy(client, world):
    body, _ = binary.encode_request(IDS, params())
    header = {"id": "kserve-7", "parameters": params(), "inputs": [ids_input(len(IDS))]}
    body, length = header_and_tail(header, IDS.astype("<i8").tobytes())
    resp = post_binary(client, body, length)
    assert resp.status_code == 200 and resp.json()["request_id"] == "kserve-7"
    exchange = binary.BinaryExchange(True, str(length), False)
    settings = Settings(repo=world["repo"], features_dir=world["data"])
    padded, padded_length = binary.encode_request(IDS, params())
    _, query = binary.BinaryExchange(True, str(padded_length), False).parse(padded, settings)
    assert query.candidate_ids.base is not None  # a view of the body, not a copy
    np.testing.assert_array_equal(query.candidate_ids, IDS)
    # an unpadded header leaves the ids unaligned: still parsed (one copy)
    _, odd = exchange.parse(body, settings)
    np.testing.assert_array_equal(odd.candidate_ids, IDS)


def _cases() -> dict[str, tuple[bytes, Any, int, list[Any]]]:
    ids = IDS.astype("<i8").tobytes()
    good = {"parameters": params(), "inputs": [ids_input(len(IDS))]}

    def case(
        header: dict[str, Any],
        tail: bytes = ids,
        length: Any = "auto",
        status: int = 422,
        loc: list[Any] | None = None,
    ):
        body, n = header_and_tail(header, tail)
        return body, n if length == "auto" else length, status, loc

    in0 = ["body", "inputs", 0]
    size_loc = [*in0, "parameters", "binary_data_size"]
    return {
        "truncated tensor": case(good, ids[:-8], loc=size_loc),
        "trailing bytes": case(good, ids + b"\0" * 8, loc=["body"]),
        "wrong dtype": case(
            {**good, "inputs": [ids_input(len(IDS), datatype="FP32")]}, loc=[*in0, "datatype"]
        ),
        "size mismatch": case(
            {**good, "inputs": [ids_input(len(IDS), size=8 * len(IDS) - 4)]}, loc=size_loc
        ),
        "negative size": case({**good, "inputs": [ids_input(len(IDS), size=-8)]}, loc=size_loc),
        "negative shape": case({**good, "inputs": [ids_input(-1)]}, loc=[*in0, "shape"]),
        "empty tensor": case({**good, "inputs": [ids_input(0)]}, b"", loc=[*in0, "shape"]),
        "no binary data": case(
            {**good, "inputs": [{**ids_input(3), "parameters": {}}]}, loc=size_loc
        ),
        "unknown input": case(
            {**good, "inputs": [ids_input(len(IDS)), ids_input(1)]}, loc=["body", "inputs", 1]
        ),
        "wrong input name": case(
            {**good, "inputs": [ids_input(len(IDS), name="ids")]}, loc=[*in0, "name"]
        ),
        "header length beyond the body": case(
            good, length=10**6, status=400, loc=["header", binary.HEADER_LENGTH]
        ),
        "negative header length": case(
            good, length=-5, status=400, loc=["header", binary.HEADER_LENGTH]
        ),
        "header length not a number": case(
            good, length="12a", status=400, loc=["header", binary.HEADER_LENGTH]
        ),
        "header length missing": case(
            good, length=None, status=400, loc=["header", binary.HEADER_LENGTH]
        ),
        "header not JSON": (b"{nope" + ids, 5, 422, ["body", "header"]),
        "unknown header key": case({**good, "extra": 1}, loc=["body", "extra"]),
        "bad parameter": case(
            {**good, "parameters": params(top_k=0)}, loc=["body", "parameters", "top_k"]
        ),
        "unknown parameter": case(
            {**good, "parameters": params(colour="red")}, loc=["body", "parameters", "colour"]
        ),
        "missing user": case(
            {**good, "parameters": {"stage": "coarse"}}, loc=["body", "parameters", "user_id"]
        ),
        "over max_candidates": case(
            {**good, "inputs": [ids_input(201)]}, b"\0" * 8 * 201, loc=[*in0, "shape"]
        ),
        "over max_fine_candidates": case(
            {"parameters": params("fine"), "inputs": [ids_input(101)]},
            b"\0" * 8 * 101,
            loc=[*in0, "shape"],
        ),
        "top_k over max_top_k": case(
            {**good, "parameters": params(top_k=51)}, loc=["body", "parameters", "top_k"]
        ),
        "binary_data_output not a boolean": case(
            {**good, "parameters": params(binary_data_output="yes")},
            loc=["body", "parameters", "binary_data_output"],
        ),
        "unknown output": case(
            {**good, "outputs": [{"name": "logits"}]}, loc=["body", "outputs", 0, "name"]
        ),
        "id and request_id": case(
            {**good, "id": "a", "parameters": params(request_id="b")}, loc=["body", "id"]
        ),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_malformed_binary_body_is_a_4xx_naming_the_field(client, case):
    body, length, status, loc = _cases()[case]
    resp = post_binary(client, body, length)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert loc_of(resp) == loc, resp.json()


def test_other_media_types_stay_415_and_media_parameters_are_ignored(client):
    body, length = binary.encode_request(IDS, params())
    resp = client.post("/v1/rank", content=body, headers={"content-type": "text/plain"})
    assert resp.status_code == 415
    resp = post_binary(client, body, length, media="application/octet-stream; charset=x")
    assert resp.status_code == 200


def test_negotiate_is_none_for_plain_json():
    assert binary.negotiate([(b"content-type", b"application/json")]) is None
    assert binary.negotiate([(b"accept", b"application/json, */*")]) is None
    ex = binary.negotiate([(b"accept", b"application/octet-stream;q=0.9")])
    assert ex is not None and ex.binary_response and not ex.binary_request
    assert ex.media_type == "application/octet-stream"

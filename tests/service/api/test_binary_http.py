"""Binary rank bodies through a real ``rocketrank serve`` (uvicorn, httptools) over
HTTP: the same request as JSON and as a binary tensor body gives identical rankings
and scores, and a binary answer carries the same ids and float32 scores."""

from __future__ import annotations

import http.client
from typing import Any

import numpy as np
import orjson
import pytest

from service.api import binary
from tests.helpers import service as sf

pytestmark = pytest.mark.slow  # starts a server process

USER = int(sf.USER_IDS[7])
CONTEXT = {"hour": 21, "device": "ios"}
# every known item (more than the 16 KiB inline limit as JSON: the ranking thread runs),
# the items without exported vectors, and one unknown id
IDS = np.array([*sf.ITEM_IDS, sf.UNKNOWN_ITEM], dtype=np.int64)[::-1].copy()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    world = sf.make_repo(tmp_path_factory.mktemp("svc-binary-http"))
    proc = sf.ServiceProcess(
        ["--repo", str(world["repo"]), "--features", str(world["data"]), "--reload-interval", "0"]
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def post(server, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v1/rank", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def params(stage: str) -> dict[str, Any]:
    extra = {"coarse_top_k": 120} if stage == "cascade" else {}
    return {"user_id": USER, "context": CONTEXT, "stage": stage, "top_k": 60, **extra}


@pytest.mark.parametrize("stage", ["coarse", "fine", "cascade"])
def test_json_and_binary_bodies_rank_identically_over_http(server, stage):
    json_body = orjson.dumps({**params(stage), "candidates": IDS.tolist()})
    status, _, raw = post(server, json_body, {"Content-Type": "application/json"})
    assert status == 200, raw
    expected = orjson.loads(raw)

    body, length = binary.encode_request(IDS, params(stage))
    headers = {"Content-Type": binary.MEDIA_TYPE, "Inference-Header-Content-Length": str(length)}
    status, resp_headers, raw = post(server, body, headers)
    assert status == 200 and resp_headers["content-type"] == "application/json"
    got = orjson.loads(raw)
    assert got["items"] == expected["items"] and len(got["items"]) == 60
    assert got["unknown_item_ids"] == expected["unknown_item_ids"] == [sf.UNKNOWN_ITEM]

    body, length = binary.encode_request(IDS, params(stage), binary_output=True)
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(length)}  # fmt: skip
    status, resp_headers, raw = post(server, body, headers)
    assert status == 200 and resp_headers["content-type"] == "application/octet-stream"
    head, arrays = binary.decode_response(raw, int(resp_headers[binary.HEADER_LENGTH]))
    assert head["parameters"]["model_versions"] == expected["model_versions"]
    assert arrays["item_ids"].tolist() == [it["item_id"] for it in expected["items"]]
    assert arrays["scores"].tolist() == [it["score"] for it in expected["items"]]
    if stage == "cascade":
        coarse = [it["coarse_score"] for it in expected["items"]]
        assert arrays["coarse_scores"].tolist() == coarse


def test_a_truncated_binary_body_over_http_names_the_field(server):
    body, length = binary.encode_request(IDS, params("coarse"))
    headers = {"Content-Type": binary.MEDIA_TYPE, "Inference-Header-Content-Length": str(length)}
    status, _, raw = post(server, body[:-3], headers)
    assert status == 422
    loc = orjson.loads(raw)["detail"][0]["loc"]
    assert loc == ["body", "inputs", 0, "parameters", "binary_data_size"]

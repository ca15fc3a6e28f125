"""What an attacker (or an unlucky client) can learn or do over HTTP.

* Internal errors are forced inside the rank path, the model listing and the
  admin reload (the failure carries a file path, as real ones do): the answer
  is a bare 500 ``internal error`` with no path and no stack trace, and the
  details go to the log only.
* Admin auth edge cases: other schemes, empty and non-ASCII tokens, a token
  that is a prefix of the real one. The basic 401/403/404 cases live in
  ``tests/service/api/test_endpoints.py``.
* The admin token never appears in any answer or the OpenAPI document.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

TOKEN = "Sup3r-s3cret-admin-token"
SECRET_PATH = "/srv/models/fine/20261122T000000Z/model.pt"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("security"))


@pytest.fixture()
def client(world: dict[str, Any]):
    settings = Settings(
        repo=world["repo"],
        features_dir=world["data"],
        reload_interval_s=0,
        item_refresh_s=0,
        admin_token=TOKEN,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def leaks(text: str, world: dict[str, Any]) -> list[str]:
    found = [
        s for s in ("Traceback", 'File "', SECRET_PATH, str(world["repo"]), TOKEN) if s in text
    ]
    return found + [s for s in (str(sf.ROOT), "/tmp/") if s in text]


def explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"cannot read {SECRET_PATH}: Input/output error")


@pytest.mark.parametrize(
    ("target", "method", "path"),
    [
        ("ranker.rank", "POST", "/v1/rank"),
        ("registry.describe", "GET", "/v1/models"),
        ("store.status", "GET", "/v1/models"),
        ("registry.reload", "POST", "/admin/reload"),
    ],
)
def test_forced_internal_errors_answer_500_without_paths_or_traces(
    client, world, caplog, target, method, path
):
    state = client.app.state.service
    owner, attribute = target.split(".")
    # fault injection: the real component is replaced by one that fails like a bad disk
    setattr(getattr(state, owner), attribute, explode)
    body = {"user_id": 1, "candidates": [int(sf.ITEM_IDS[0])]} if path == "/v1/rank" else None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.ERROR):
        resp = client.request(method, path, json=body, headers=headers)
    assert resp.status_code == 500
    assert resp.json() == {"detail": "internal error"}
    assert leaks(resp.text, world) == []
    assert SECRET_PATH in caplog.text  # the operator still gets the details


def test_error_answers_of_the_reload_path_name_no_repository_paths(client, world):
    broken = world["repo"] / "fine" / "current"
    target = broken.resolve()
    broken.unlink()
    broken.symlink_to("no-such-version")
    try:
        resp = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        broken.unlink()
        broken.symlink_to(target.name)
    assert resp.status_code in (200, 409)
    assert leaks(resp.text, world) == []
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Basic {TOKEN}", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        (f"Token {TOKEN}", 401),
        (f"Bearer {TOKEN[:-1]}", 403),
        (f"Bearer {TOKEN}x", 403),
        ("Bearer tökën-ünïcode".encode(), 403),  # raw non-ASCII header bytes
        (f"Bearer {TOKEN.lower()}", 403),
        (f"bearer {TOKEN}", 200),
    ],
)
def test_admin_auth_edge_cases(client, world, authorization, status):
    resp = client.post("/admin/reload", headers={"Authorization": authorization})
    assert resp.status_code == status, resp.text
    assert leaks(resp.text, world) == []


def test_the_admin_token_appears_in_no_answer(client, world):
    client.post("/v1/rank", json={"user_id": 1, "candidates": [1]})
    for path in ("/healthz", "/readyz", "/v1/models", "/metrics", "/openapi.json", "/docs"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert TOKEN not in resp.text, path

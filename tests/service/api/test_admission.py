"""Admission control of POST /v1/rank at the ASGI level, with the app's real state: an
in-flight limit answered 503 + Retry-After before any work, a deadline from arrival,
a body-read deadline, Content-Length refused before reading, and a client that left
while queued is not scored. The rank thread is held busy on purpose (a blocker task in
the service's own executor) to make a request wait in the queue."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.api import rank
from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf

BODY = orjson.dumps(
    {"user_id": int(sf.USER_IDS[1]), "candidates": [int(i) for i in sf.ITEM_IDS[:20]]}
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-admission"))


@pytest.fixture()
def app(world, monkeypatch):
    # every request goes through the thread pool (small bodies would run inline)
    monkeypatch.setattr(rank, "_INLINE_BODY_BYTES", -1)
    settings = Settings(
        repo=world["repo"], features_dir=world["data"], reload_interval_s=0, item_refresh_s=0,
        rank_threads=1, max_inflight=1, request_deadline_ms=100, body_timeout_s=0.3,
        max_body_bytes=64 * 1024, retry_after_s=3,
    )  # fmt: skip
    application = create_app(settings)
    with TestClient(application):
        yield application


def shed(app, reason: str) -> float:
    return app.state.service.metrics.shed.labels(reason)._value.get()


def block_executor(app) -> threading.Event:
    """Occupy the single rank thread until the returned event is set."""
    release = threading.Event()
    app.state.service.executor.submit(release.wait)
    return release


def call(app, receive_messages, headers=None, after=None) -> tuple[list[dict], int]:
    """Run the endpoint once; ``receive_messages`` are returned in order, then the
    receive call blocks (or returns ``after`` when given). Returns (sent, receives)."""
    sent: list[dict] = []
    calls = 0

    async def receive():
        nonlocal calls
        calls += 1
        if calls <= len(receive_messages):
            return receive_messages[calls - 1]
        if after is not None:
            await asyncio.sleep(0.05)
            return after
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "app": app, "headers": headers or [], "method": "POST"}
    asyncio.run(rank.RankEndpoint()(scope, receive, send))
    return sent, calls


def request(body: bytes = BODY, more: bool = False) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def status(sent: list[dict]) -> int:
    return sent[0]["status"]


def header(sent: list[dict], name: bytes) -> bytes | None:
    return dict(sent[0]["headers"]).get(name)


def test_over_the_inflight_limit_is_503_with_retry_after_before_any_work(app):
    app.state.service.inflight = 1  # one request admitted and not answered
    try:
        sent, receives = call(app, [request()])
    finally:
        app.state.service.inflight = 0
    assert status(sent) == 503 and header(sent, b"retry-after") == b"3"
    assert header(sent, b"connection") is None  # the body was dropped: keep-alive
    assert receives == 1 and app.state.service.buffered_bytes == 0
    assert shed(app, "overload") == 1
    sent, _ = call(app, [request()])
    assert status(sent) == 200


def test_a_request_queued_past_its_deadline_is_503_and_never_scored(app):
    release = block_executor(app)
    threading.Timer(0.5, release.set).start()  # the request waits > its 100 ms deadline
    scored_before = app.state.service.metrics.candidates.labels("cascade")._sum.get()
    sent, _ = call(app, [request()])
    assert status(sent) == 503 and header(sent, b"retry-after") == b"3"
    assert b"deadline" in sent[1]["body"]
    assert shed(app, "deadline") == 1
    assert app.state.service.metrics.candidates.labels("cascade")._sum.get() == scored_before


def test_a_client_that_left_while_queued_is_not_scored(app):
    release = block_executor(app)
    threading.Timer(0.5, release.set).start()
    sent, _ = call(app, [request()], after={"type": "http.disconnect"})
    assert sent == []  # nobody to answer, nothing scored
    assert shed(app, "disconnected") == 1


def test_a_client_that_left_before_its_body_was_in_is_counted_and_not_scored(app):
    scored_before = app.state.service.metrics.candidates.labels("cascade")._sum.get()
    sent, _ = call(app, [request(b'{"user_id": 1, ', more=True), {"type": "http.disconnect"}])
    assert sent == []
    assert shed(app, "disconnected") == 1
    assert app.state.service.metrics.candidates.labels("cascade")._sum.get() == scored_before


def test_a_body_not_received_in_time_is_408(app):
    sent, _ = call(app, [request(b'{"user_id": 1, ', more=True)])
    assert status(sent) == 408
    assert header(sent, b"connection") == b"close"
    assert shed(app, "body_timeout") == 1


def test_a_declared_content_length_far_over_the_limit_is_413_before_reading(app):
    sent, receives = call(app, [request()], headers=[(b"content-length", b"10000000")])
    assert status(sent) == 413 and receives == 0
    assert header(sent, b"connection") == b"close"


def test_a_body_growing_past_the_limit_is_413_and_nothing_of_it_is_kept(app):
    chunk = b"x" * 40_000
    sent, _ = call(app, [request(chunk, more=True)] * 3 + [request(b"")])
    assert status(sent) == 413
    assert app.state.service.buffered_bytes == 0

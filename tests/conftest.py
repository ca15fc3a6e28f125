"""Session-wide test fixtures: a real Redis server (never a mock).

``redis_url`` uses the Redis at 127.0.0.1:6379 when it answers; otherwise it
starts a throwaway ``redis-server`` (``tests/helpers/redis.py``). Under
``CI=true`` a Redis test never skips: not finding a server is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import signing
from tests.helpers.redis import RedisServer, ping, require_binary

signing.install_env()  # artifacts are signed and verified with a throwaway key pair


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server for the whole session."""
    if ping("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    server = RedisServer(require_binary())
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture()
def throwaway_redis() -> Iterator[RedisServer]:
    """A private redis-server a test may kill and restart (fault tests)."""
    server = RedisServer(require_binary())
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    import redis

    prefix = f"rocketrank-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()

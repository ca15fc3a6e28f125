"""The Redis feature store.

Key layout (written by ``rocketrank features load``, read here), under a prefix
``P`` and a feature version ``V``::

    P current            -> V          the version readers follow (set last)
    P V:meta             -> JSON       id columns, row counts, number of item chunks
    P V:user:<user_id>   -> JSON       one user's raw features (one GET per request)
    P V:items:<k>        -> JSON       chunk k of the item table, columnar

Per request the service makes exactly one round trip (``GET`` of the user's blob)
with a short socket timeout; once per ``check_interval_s`` (and at every breaker
probe) that round trip is a pipeline that also checks that the served version still
exists (its meta key, and the ``current`` pointer unless the version is pinned). A
store whose version is gone (flushed, restarted empty, evicted) is *unavailable*, not
empty: answers are degraded until the version is back or ``current`` names a
loaded one. A missing user key while the version exists is an unknown user. A
circuit breaker skips Redis entirely after repeated failures and lets one probe
through after a cool-down, so a slow or dead Redis
costs a bounded delay, the answer says ``degraded: true``, and the store
recovers by itself. Item features are bulk-read into memory (at start, on a
schedule and when ``current`` moves), never per candidate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.feature_store.base import FeatureStore, ItemTable, UserLookup
from service.feature_store.breaker import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

LAYOUT_FORMAT = 1
_CHUNKS_PER_CALL = 16
_STORE_ERRORS = (redis.RedisError, OSError)


class RedisLayout:
    """Key names of one feature-store prefix (shared by the loader and the store)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def current(self) -> str:
        return f"{self.prefix}current"

    def meta(self, version: str) -> str:
        return f"{self.prefix}{version}:meta"

    def user(self, version: str, user_id: int) -> str:
        return f"{self.prefix}{version}:user:{user_id}"

    def items_chunk(self, version: str, index: int) -> str:
        return f"{self.prefix}{version}:items:{index}"

    def version_pattern(self, version: str) -> str:
        return f"{self.prefix}{version}:*"


def column_array(values: Sequence[Any]) -> np.ndarray:
    """Raw JSON values -> a column array the FeatureEncoder accepts.

    Lists (multi-valued features) go into an object array of lists; scalars into
    a typed array when homogeneous, an object array when they mix with ``None``.
    """
    if any(isinstance(v, list) for v in values):
        return np.fromiter(values, dtype=object, count=len(values))
    arr = np.asarray(values)
    if arr.dtype.kind not in "iufbUO":
        arr = np.asarray(values, dtype=object)
    return arr


def _json(blob: bytes, key: str) -> Any:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:
        raise ValueError(f"{key} is not JSON") from None


def _meta_chunks(meta: Any, key: str) -> int:
    """The number of item chunks a version's meta names (validated)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{key}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != LAYOUT_FORMAT:
        raise ValueError(f"{key}: unsupported feature layout format {meta.get('format')!r}")
    chunks = meta.get("item_chunks")
    if type(chunks) is not int or chunks < 0:
        raise ValueError(f"{key}: 'item_chunks' must be a non-negative integer, got {chunks!r}")
    return chunks


def _client(url: str, timeout_s: float, connect_timeout_s: float | None = None) -> redis.Redis:
    # No client-side retries: one attempt per call, bounded by the socket timeout.
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s or timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


class RedisFeatureStore(FeatureStore):
    """User features per request from Redis, item features bulk-loaded into memory.

    Args:
        url: ``redis://host:port/db``.
        prefix: key prefix used by ``rocketrank features load``.
        version: feature version to read; empty = follow ``<prefix>current``.
        timeout_ms: socket timeout of the per-request user lookup.
        breaker_failures: consecutive failures that open the circuit.
        breaker_cooldown_s: seconds before a half-open probe.
        bulk_timeout_s: socket timeout of the bulk item read.
        check_interval_s: how often a lookup also verifies the served version.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "rocketrank:",
        version: str = "",
        timeout_ms: float = 20.0,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 2.0,
        bulk_timeout_s: float = 10.0,
        check_interval_s: float = 1.0,
    ) -> None:
        self.layout = RedisLayout(prefix)
        self.check_interval_s = check_interval_s
        self._next_check = 0.0
        # the served version's meta key or the current pointer has disappeared
        self._gone = False
        self.pinned_version = version or None
        self.breaker = CircuitBreaker(breaker_failures, breaker_cooldown_s)
        self._fast = _client(url, timeout_ms / 1000.0)
        # Long reads for big item tables, but a dead host must not stall the watcher.
        self._bulk = _client(url, bulk_timeout_s, min(bulk_timeout_s, 1.0))
        self._refresh_lock = threading.Lock()
        self._version: str | None = None
        self._items = ItemTable.empty()
        self._items_ok = False
        self.refresh()

    # ----------------------------------------------------------------- per request
    def get_user(self, user_id: int) -> UserLookup:
        start = time.perf_counter()
        version = self._version
        admitted = self.breaker.admit() if version is not None else None
        if version is None or admitted is None:
            return UserLookup(degraded=True, seconds=time.perf_counter() - start)
        now = time.monotonic()
        check = admitted is BreakerState.HALF_OPEN or self._gone or now >= self._next_check
        try:
            if check:
                self._next_check = now + self.check_interval_s
                blob, present = self._get_checked(version, user_id)
            else:
                blob, present = self._fast.get(self.layout.user(version, user_id)), True
        except _STORE_ERRORS as exc:
            self.breaker.record_failure()
            log.debug("redis user lookup failed: %s", exc)
            return UserLookup(degraded=True, seconds=time.perf_counter() - start)
        except Exception:  # never leave a claimed probe behind, never fail the request
            self.breaker.record_failure()
            log.exception("redis user lookup failed unexpectedly")
            return UserLookup(degraded=True, seconds=time.perf_counter() - start)
        if not present:
            self._set_gone(version)
            self.breaker.trip()
            return UserLookup(degraded=True, seconds=time.perf_counter() - start)
        if check and self._gone:
            self._gone = False
            log.warning("redis feature store: version %s is back", version)
        self.breaker.record_success()
        if blob is None:
            return UserLookup(seconds=time.perf_counter() - start)
        try:
            features = orjson.loads(blob)
        except orjson.JSONDecodeError:
            log.warning("redis user %s: stored features are not JSON; using defaults", user_id)
            return UserLookup(degraded=True, seconds=time.perf_counter() - start)
        if not isinstance(features, dict):
            return UserLookup(degraded=True, seconds=time.perf_counter() - start)
        return UserLookup(features, found=True, seconds=time.perf_counter() - start)

    def _get_checked(self, version: str, user_id: int) -> tuple[bytes | None, bool]:
        """The user's blob and whether ``version`` still exists, in one round trip."""
        pipe = self._fast.pipeline(transaction=False)
        pipe.get(self.layout.user(version, user_id))
        pipe.exists(self.layout.meta(version))
        if self.pinned_version is None:
            pipe.get(self.layout.current)
        replies = pipe.execute()
        present = bool(replies[1]) and (self.pinned_version is not None or replies[2] is not None)
        return replies[0], present

    def _set_gone(self, version: str) -> None:
        if not self._gone:
            self._gone = True
            log.error(
                "redis feature store: version %s is gone (%s or %s missing: Redis flushed, "
                "restarted empty or evicted); answering degraded until it is back",
                version, self.layout.meta(version), self.layout.current,
            )  # fmt: skip

    # ----------------------------------------------------------------- items
    def items(self) -> ItemTable:
        return self._items

    def items_available(self) -> bool:
        return self._items_ok and not self._gone

    def available(self) -> bool:
        """The served version exists in Redis as far as the last check knows."""
        return self._version is not None and not self._gone

    def refresh(self) -> bool:
        """Reload item features when the followed version changed (or never loaded).

        Failures are logged and leave the previous table in place.
        """
        with self._refresh_lock:
            try:
                version = self.pinned_version or self._read_pointer()
                if version is None:
                    if self._version is not None:
                        self._set_gone(self._version)
                    log.warning("redis feature store: %s is not set", self.layout.current)
                    return False
                if self._items_ok and version == self._items.version:
                    if self._bulk.exists(self.layout.meta(version)):
                        self._gone = False
                        self.breaker.record_success()
                    else:
                        self._set_gone(version)
                    return False
                table = self._read_items(version)
            except _STORE_ERRORS as exc:
                log.warning("redis feature store: cannot read item features: %s", exc)
                return False
            except ValueError as exc:
                if self._version is not None and self._version == version:
                    self._set_gone(version)
                log.error("redis feature store: invalid item features: %s", exc)
                return False
            self._items = table
            self._version = version
            self._items_ok = True
            self._gone = False
            self.breaker.record_success()
            log.info("redis feature store: %d items of version %s loaded", len(table), version)
            return True

    def _read_pointer(self) -> str | None:
        raw = self._bulk.get(self.layout.current)
        return raw.decode() if raw is not None else None

    def _read_items(self, version: str) -> ItemTable:
        """The item table of ``version``.

        Raises:
            ValueError: missing or malformed meta or chunks, naming the key.
        """
        meta_key = self.layout.meta(version)
        raw_meta = self._bulk.get(meta_key)
        if raw_meta is None:
            raise ValueError(f"{meta_key} is missing")
        chunks = _meta_chunks(_json(raw_meta, meta_key), meta_key)
        ids: list[int] = []
        columns: dict[str, list[Any]] = {}
        for start in range(0, chunks, _CHUNKS_PER_CALL):
            keys = [
                self.layout.items_chunk(version, k)
                for k in range(start, min(chunks, start + _CHUNKS_PER_CALL))
            ]
            for key, blob in zip(keys, self._bulk.mget(keys)):
                if blob is None:
                    raise ValueError(f"{key} is missing")
                chunk = _json(blob, key)
                chunk_ids = chunk.get("ids") if isinstance(chunk, dict) else None
                chunk_columns = chunk.get("columns") if isinstance(chunk, dict) else None
                if not isinstance(chunk_ids, list) or not isinstance(chunk_columns, dict):
                    raise ValueError(f"{key}: expected an object with 'ids' and 'columns'")
                if any(
                    not isinstance(v, list) or len(v) != len(chunk_ids)
                    for v in chunk_columns.values()
                ):
                    raise ValueError(f"{key}: every column must be a list as long as 'ids'")
                ids.extend(chunk_ids)
                for name, values in chunk_columns.items():
                    columns.setdefault(name, []).extend(values)
        try:
            id_arr = np.asarray(ids, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"version {version}: item ids are not int64") from None
        order = np.argsort(id_arr, kind="stable")
        id_arr = id_arr[order]
        if len(id_arr) > 1 and (np.diff(id_arr) == 0).any():
            raise ValueError(f"duplicated item ids in version {version}")
        arrays = {name: column_array(values)[order] for name, values in columns.items()}
        return ItemTable(id_arr, arrays, version=version)

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "version": self._version,
            "items_available": self._items_ok,
            "breaker": str(self.breaker.state),
            "available": self.available(),
        }

    def close(self) -> None:
        self._fast.close()
        self._bulk.close()

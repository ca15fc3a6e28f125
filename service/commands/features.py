"""``rocketrank features load``: fill Redis with user and item features;
``rocketrank features prune --keep N``: delete the keys of old versions.

Reads ``users.parquet`` and ``items.parquet`` from a data directory and writes
them under ``<prefix><version>:`` (layout in ``service.feature_store.redis_store``)
with pipelined ``SET``s, then points ``<prefix>current`` at the version. The
default version is a digest of the two files, so loading the same data twice
writes the same keys with the same values (idempotent), and a reader never
sees a half-written version: the pointer moves last.

Prune keeps the version ``current`` names and the ``N - 1`` most recently loaded
others (``loaded_at`` in their meta); it deletes only keys under the prefix whose
meta says they belong to a version of this prefix, with ``SCAN`` + ``UNLINK`` in
batches (never ``KEYS``, never ``FLUSH*``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import redis

from models.contract.manifest import sha256_files
from service.feature_store.embedded import ITEMS_FILE, USERS_FILE
from service.feature_store.redis_store import LAYOUT_FORMAT, RedisLayout

ITEM_CHUNK_ROWS = 5_000
PIPELINE_BATCH = 1_000


def add_arguments_for(path: str, parser: argparse.ArgumentParser) -> None:
    if path == "features prune":
        parser.add_argument("--redis", required=True, help="Redis URL")
        parser.add_argument("--prefix", default="rocketrank:", help="key prefix")
        parser.add_argument(
            "--keep", type=int, required=True, help="versions kept, the current one included"
        )
        parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
        return
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", required=True, help="Redis URL, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--data", required=True, type=Path, help="folder with users.parquet and items.parquet"
    )
    parser.add_argument("--prefix", default="rocketrank:", help="key prefix (default rocketrank:)")
    parser.add_argument(
        "--version", default=None, help="feature version (default: digest of the two files)"
    )
    parser.add_argument(
        "--user-id-column", default="user_id", help="id column of users.parquet (default user_id)"
    )
    parser.add_argument(
        "--item-id-column", default="item_id", help="id column of items.parquet (default item_id)"
    )
    parser.add_argument(
        "--no-promote", action="store_true", help="write the version but leave <prefix>current"
    )


def data_version(*paths: Path) -> str:
    """Digest of the files' bytes: the same data always gets the same version."""
    return "v" + sha256_files(paths)[:16]


def _batches(path: Path, rows: int) -> Iterator[list[dict[str, Any]]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        yield batch.to_pylist()


def _check_id(path: Path, column: str) -> None:
    schema = pq.read_schema(path)
    if column not in schema.names:
        raise ValueError(f"{path} has no id column {column!r}; columns: {schema.names}")
    kind = str(schema.field(column).type)
    if not kind.startswith(("int", "uint")):
        raise ValueError(f"{path}: id column {column!r} must hold integers, got {kind}")


def _loaded_at(client: redis.Redis, meta_key: str) -> float:
    try:
        previous = orjson.loads(client.get(meta_key) or b"null")
    except orjson.JSONDecodeError:
        previous = None
    if isinstance(previous, dict) and isinstance(previous.get("loaded_at"), int | float):
        return float(previous["loaded_at"])
    return time.time()


def load_features(
    client: redis.Redis,
    data: Path,
    prefix: str,
    version: str | None = None,
    user_id_column: str = "user_id",
    item_id_column: str = "item_id",
    promote: bool = True,
) -> dict[str, Any]:
    """Write one feature version to Redis and (optionally) make it current.

    Returns:
        ``{"version", "users", "items", "item_chunks", "seconds"}``.
    """
    start = time.perf_counter()
    users_path, items_path = data / USERS_FILE, data / ITEMS_FILE
    for path in (users_path, items_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    _check_id(users_path, user_id_column)
    _check_id(items_path, item_id_column)
    version = version or data_version(users_path, items_path)
    layout = RedisLayout(prefix)
    opt = orjson.OPT_SERIALIZE_NUMPY

    n_users = 0
    pipe = client.pipeline(transaction=False)
    for rows in _batches(users_path, PIPELINE_BATCH):
        for row in rows:
            uid = row.pop(user_id_column)
            pipe.set(layout.user(version, int(uid)), orjson.dumps(row, option=opt))
        n_users += len(rows)
        pipe.execute()

    n_items = chunks = 0
    for rows in _batches(items_path, ITEM_CHUNK_ROWS):
        ids = [int(r.pop(item_id_column)) for r in rows]
        columns = {name: [r[name] for r in rows] for name in (rows[0] if rows else {})}
        blob = orjson.dumps({"ids": ids, "columns": columns}, option=opt)
        pipe.set(layout.items_chunk(version, chunks), blob)
        chunks += 1
        n_items += len(rows)
        if chunks % 8 == 0:
            pipe.execute()
    meta = {
        "format": LAYOUT_FORMAT,
        "version": version,
        "users": n_users,
        "items": n_items,
        "item_chunks": chunks,
        "user_id_column": user_id_column,
        "item_id_column": item_id_column,
        # kept from an earlier load of the same version: loading twice writes the same bytes
        "loaded_at": _loaded_at(client, layout.meta(version)),
    }
    pipe.set(layout.meta(version), orjson.dumps(meta))
    pipe.execute()
    if promote:
        client.set(layout.current, version)
    return {**meta, "seconds": time.perf_counter() - start}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def feature_versions(client: redis.Redis, prefix: str) -> dict[str, float]:
    """Versions stored under ``prefix``: version -> ``loaded_at`` (0 when unknown).

    A key ``<prefix><v>:meta`` counts only when its JSON names ``v`` as its version
    and has this layout's format, so keys of a longer prefix are never taken for ours.
    """
    versions: dict[str, float] = {}
    pattern = _glob_escape(prefix) + "*:meta"
    for key in client.scan_iter(match=pattern, count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        version = name[len(prefix) : -len(":meta")]
        try:
            meta = orjson.loads(client.get(key) or b"null")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(meta, dict) or meta.get("version") != version:
            continue
        if meta.get("format") != LAYOUT_FORMAT:
            continue
        loaded = meta.get("loaded_at")
        versions[version] = float(loaded) if isinstance(loaded, int | float) else 0.0
    return versions


def prune_features(
    client: redis.Redis, prefix: str, keep: int, dry_run: bool = False
) -> dict[str, Any]:
    """Delete every version under ``prefix`` except the current one and the newest others.

    Args:
        keep: versions kept, the current one included (>= 1).

    Returns:
        ``{"kept": [...], "deleted": [...], "keys": number of keys deleted}``.
    """
    if keep < 1:
        raise ValueError("--keep must be at least 1 (the current version is always kept)")
    layout = RedisLayout(prefix)
    raw = client.get(layout.current)
    current = raw.decode() if raw is not None else None
    versions = feature_versions(client, prefix)
    others = sorted((v for v in versions if v != current), key=lambda v: -versions[v])
    kept = ([current] if current in versions else []) + others
    kept = kept[:keep]
    deleted = [v for v in versions if v not in kept]
    n_keys = 0
    for version in deleted:
        # the meta key goes last: a half-pruned version is still found by the next prune
        meta = layout.meta(version)
        batch: list[Any] = []
        for key in client.scan_iter(match=_glob_escape(f"{prefix}{version}:") + "*", count=1000):
            if key in (meta, meta.encode()):
                continue
            batch.append(key)
            if len(batch) >= PIPELINE_BATCH:
                n_keys += len(batch) if dry_run else client.unlink(*batch)
                batch = []
        if batch:
            n_keys += len(batch) if dry_run else client.unlink(*batch)
        n_keys += 1 if dry_run else client.unlink(meta)
    return {"current": current, "kept": kept, "deleted": deleted, "keys": n_keys}


def redact(url: str) -> str:
    """A Redis URL without its password (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    auth, _, host = rest.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


def run(args: argparse.Namespace) -> int:
    if getattr(args, "command_path", "features load") == "features prune":
        return _run_prune(args)
    client = redis.Redis.from_url(args.redis, socket_timeout=30, socket_connect_timeout=5)
    try:
        result = load_features(
            client,
            args.data,
            args.prefix,
            args.version,
            args.user_id_column,
            args.item_id_column,
            promote=not args.no_promote,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"rocketrank features load: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(
            f"rocketrank features load: Redis at {redact(args.redis)} failed: {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        client.close()
    state = "current" if not args.no_promote else "written (not promoted)"
    print(
        f"feature version {result['version']} {state}: {result['users']} users, "
        f"{result['items']} items in {result['item_chunks']} chunk(s) under "
        f"{args.prefix!r} in {result['seconds']:.1f} s"
    )
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    client = redis.Redis.from_url(args.redis, socket_timeout=30, socket_connect_timeout=5)
    try:
        result = prune_features(client, args.prefix, args.keep, dry_run=args.dry_run)
    except ValueError as exc:
        print(f"rocketrank features prune: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(
            f"rocketrank features prune: Redis at {redact(args.redis)} failed: {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        client.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {len(result['deleted'])} version(s) ({result['keys']} keys) under "
        f"{args.prefix!r}: {result['deleted']}; kept {result['kept']} (current "
        f"{result['current']})"
    )
    return 0

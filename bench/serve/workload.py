"""The benchmark's requests: realistic rank bodies built from a feature directory.

Users come from ``users.parquet``, candidates from ``items.parquet`` (sampled
without replacement while there are enough items, so a 10,000-candidate request
over a 10,000-item catalogue is the whole catalogue in random order), and
context values (e.g. ``hour``, ``device``) from rows of a log split in the same
directory when one exists (``test``/``valid``/``train.parquet``). Every body is
serialised once (``json``: orjson; ``binary``: the KServe/Triton binary tensor
body of :mod:`service.api.binary`, asking for a binary answer); the load
generator only replays bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq

from service.api import binary

BODY_FORMATS = ("json", "binary")

STAGE_DEFAULTS = {
    "coarse": {"candidates": 10_000, "top_k": 50, "coarse_top_k": None},
    "fine": {"candidates": 500, "top_k": 50, "coarse_top_k": None},
    "cascade": {"candidates": 10_000, "top_k": 50, "coarse_top_k": 500},
}
"""The design's benchmark shapes: coarse 10k, fine 500, cascade 10k → 500 → 50."""

_LOG_SPLITS = ("test.parquet", "valid.parquet", "train.parquet")


class WorkloadError(ValueError):
    """The feature directory cannot provide the requested workload."""


@dataclass(frozen=True)
class RankCall:
    """One benchmark request, before serialisation.

    Attributes:
        user_id: int64 user id.
        candidates: int64 ``[K]`` candidate item ids.
        context: raw context features.
        stage: ``coarse``, ``fine`` or ``cascade``.
        top_k: items returned.
        coarse_top_k: coarse survivors (cascade only).
    """

    user_id: int
    candidates: np.ndarray
    context: dict[str, Any]
    stage: str
    top_k: int
    coarse_top_k: int | None = None

    def body(self) -> bytes:
        """The JSON body of ``POST /v1/rank`` (candidates as a plain id list: the fast path)."""
        data: dict[str, Any] = {
            "user_id": self.user_id,
            "context": self.context,
            "candidates": self.candidates,
            "stage": self.stage,
            "top_k": self.top_k,
        }
        if self.coarse_top_k is not None:
            data["coarse_top_k"] = self.coarse_top_k
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)

    def binary_body(self) -> tuple[bytes, dict[str, str]]:
        """The binary body (asking for a binary answer) and its HTTP headers."""
        params: dict[str, Any] = {
            "user_id": self.user_id,
            "context": self.context,
            "stage": self.stage,
            "top_k": self.top_k,
        }
        if self.coarse_top_k is not None:
            params["coarse_top_k"] = self.coarse_top_k
        body, length = binary.encode_request(self.candidates, params, binary_output=True)
        headers = {
            "Content-Type": binary.MEDIA_TYPE,
            "Accept": binary.MEDIA_TYPE,
            "Inference-Header-Content-Length": str(length),
        }
        return body, headers


@dataclass
class Workload:
    """A fixed set of calls replayed round-robin by the load generator.

    Attributes:
        calls: the requests.
        body_format: ``json`` or ``binary`` (:data:`BODY_FORMATS`).
        bodies: one serialised body per call.
        headers: HTTP headers per body (empty: the JSON defaults).
        catalogue_items: items in the catalogue the candidates were drawn from.
    """

    calls: list[RankCall]
    body_format: str = "json"
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    catalogue_items: int = 0

    def __post_init__(self) -> None:
        if self.body_format not in BODY_FORMATS:
            raise WorkloadError(
                f"body format must be one of {BODY_FORMATS}, got {self.body_format!r}"
            )
        if not self.bodies:
            if self.body_format == "binary":
                pairs = [c.binary_body() for c in self.calls]
                self.bodies = [b for b, _ in pairs]
                self.headers = [h for _, h in pairs]
            else:
                self.bodies = [c.body() for c in self.calls]
        if not self.headers:
            self.headers = [{} for _ in self.bodies]

    def with_body(self, body_format: str) -> Workload:
        """The same calls serialised as ``body_format``."""
        return Workload(self.calls, body_format, catalogue_items=self.catalogue_items)

    @property
    def mean_body_bytes(self) -> float:
        return float(np.mean([len(b) for b in self.bodies]))


def _read_ids(path: Path, column: str) -> np.ndarray:
    if not path.is_file():
        raise WorkloadError(f"{path} does not exist (need users.parquet and items.parquet)")
    table = pq.read_table(path, columns=[column])
    ids = table.column(column).to_numpy()
    if ids.dtype.kind not in "iu":
        raise WorkloadError(f"{path}: id column {column!r} must hold integers, got {ids.dtype}")
    return np.unique(ids.astype(np.int64))


def _context_rows(directory: Path, names: Sequence[str], n: int, rng: np.random.Generator):
    """``n`` context dicts sampled from a log split (empty dicts when there is none)."""
    if not names:
        return [{} for _ in range(n)]
    for split in _LOG_SPLITS:
        path = directory / split
        if path.is_file():
            schema_names = set(pq.read_schema(path).names)
            cols = [c for c in names if c in schema_names]
            if not cols:
                break
            table = pq.read_table(path, columns=cols).to_pandas()
            rows = rng.integers(0, len(table), size=n)
            return [{c: _plain(table[c].iat[int(r)]) for c in cols} for r in rows]
    return [{} for _ in range(n)]


def _plain(value: Any) -> Any:
    """numpy/pandas scalars → JSON-native Python values."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_workload(
    features_dir: str | Path,
    stage: str,
    *,
    candidates: int | None = None,
    top_k: int | None = None,
    coarse_top_k: int | None = None,
    context_features: Sequence[str] = (),
    n_requests: int = 32,
    seed: int = 0,
    user_id_column: str = "user_id",
    item_id_column: str = "item_id",
) -> Workload:
    """Build ``n_requests`` distinct rank calls for ``stage``.

    Args:
        features_dir: folder with ``users.parquet`` and ``items.parquet``.
        stage: ``coarse``, ``fine`` or ``cascade``.
        candidates: candidates per request (default per :data:`STAGE_DEFAULTS`).
        top_k: items returned (default 50).
        coarse_top_k: cascade survivors (default 500).
        context_features: context feature names to fill from a log split.
        n_requests: distinct bodies (replayed round-robin).
        seed: RNG seed; the workload is a deterministic function of the arguments.
        user_id_column: id column of ``users.parquet``.
        item_id_column: id column of ``items.parquet``.

    Raises:
        WorkloadError: unknown stage, missing files, or bad sizes.
    """
    if stage not in STAGE_DEFAULTS:
        raise WorkloadError(f"stage must be one of {list(STAGE_DEFAULTS)}, got {stage!r}")
    defaults = STAGE_DEFAULTS[stage]
    k = candidates if candidates is not None else defaults["candidates"]
    top = top_k if top_k is not None else defaults["top_k"]
    survivors = coarse_top_k if coarse_top_k is not None else defaults["coarse_top_k"]
    if k < 1 or top < 1 or n_requests < 1 or (survivors is not None and survivors < 1):
        raise WorkloadError("candidates, top_k, coarse_top_k and n_requests must be >= 1")
    directory = Path(features_dir)
    users = _read_ids(directory / "users.parquet", user_id_column)
    items = _read_ids(directory / "items.parquet", item_id_column)
    if len(users) == 0 or len(items) == 0:
        raise WorkloadError(f"{directory}: users.parquet and items.parquet must not be empty")
    rng = np.random.default_rng(seed)
    contexts = _context_rows(directory, context_features, n_requests, rng)
    calls = []
    for i in range(n_requests):
        replace = k > len(items)
        cands = rng.choice(items, size=k, replace=replace).astype(np.int64)
        calls.append(
            RankCall(
                user_id=int(rng.choice(users)),
                candidates=cands,
                context=contexts[i],
                stage=stage,
                top_k=top,
                coarse_top_k=survivors if stage == "cascade" else None,
            )
        )
    return Workload(calls, catalogue_items=len(items))


__all__ = [
    "BODY_FORMATS",
    "STAGE_DEFAULTS",
    "RankCall",
    "Workload",
    "WorkloadError",
    "build_workload",
]

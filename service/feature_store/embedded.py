"""The embedded feature store: ``users.parquet`` and ``items.parquet`` held in memory.

The default when no Redis URL is configured (what ``make demo`` uses). Every
column other than the id is a feature; lookups are binary searches over the
sorted int64 ids, so a user lookup costs microseconds and never fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.contract.manifest import sha256_file  # re-exported from models.provenance
from service.feature_store.base import (
    FeatureStore,
    FeatureStoreError,
    ItemTable,
    UserLookup,
)

USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"


def read_table(path: Path, id_column: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a Parquet feature table into sorted int64 ids and aligned raw columns.

    Raises:
        FeatureStoreError: file missing, id column missing, ids not integers or duplicated.
    """
    if not path.is_file():
        raise FeatureStoreError(f"feature table {path} does not exist")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise FeatureStoreError(f"feature table {path} cannot be read: {exc}") from exc
    if id_column not in frame.columns:
        raise FeatureStoreError(
            f"feature table {path} has no id column {id_column!r}; columns: {list(frame.columns)}"
        )
    if frame[id_column].dtype.kind not in "iu":
        raise FeatureStoreError(
            f"feature table {path}: id column {id_column!r} must hold integers, "
            f"got {frame[id_column].dtype}"
        )
    frame = frame.sort_values(id_column, kind="stable")
    ids = frame[id_column].to_numpy(dtype=np.int64)
    if len(ids) > 1 and (np.diff(ids) == 0).any():
        dup = ids[1:][np.diff(ids) == 0][:5].tolist()
        raise FeatureStoreError(f"feature table {path}: duplicated {id_column} value(s) {dup}")
    columns = {c: frame[c].to_numpy() for c in frame.columns if c != id_column}
    return ids, columns


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's sha256 (the table's version)."""
    return sha256_file(path)[:16]


class EmbeddedFeatureStore(FeatureStore):
    """User and item features from a data directory, in process memory.

    Args:
        directory: folder with ``users.parquet`` and ``items.parquet``.
        user_id_column: id column of ``users.parquet``.
        item_id_column: id column of ``items.parquet``.
    """

    kind = "embedded"

    def __init__(
        self,
        directory: str | Path,
        user_id_column: str = "user_id",
        item_id_column: str = "item_id",
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FeatureStoreError(f"features directory {self.directory} does not exist")
        self._user_ids, self._user_columns = read_table(self.directory / USERS_FILE, user_id_column)
        items_path = self.directory / ITEMS_FILE
        ids, columns = read_table(items_path, item_id_column)
        self._items = ItemTable(ids, columns, version=file_digest(items_path))

    def get_user(self, user_id: int) -> UserLookup:
        start = time.perf_counter()
        ids = self._user_ids
        # A scalar binary search: an array lookup's round trip costs far more for one id
        # (see docs/BENCHMARKS.md).
        row = int(np.searchsorted(ids, np.int64(user_id))) if len(ids) else 0
        if row >= len(ids) or int(ids[row]) != user_id:
            return UserLookup(seconds=time.perf_counter() - start)
        features: dict[str, Any] = {n: col[row] for n, col in self._user_columns.items()}
        return UserLookup(features, found=True, seconds=time.perf_counter() - start)

    def items(self) -> ItemTable:
        return self._items

    def status(self) -> dict[str, Any]:
        return {**super().status(), "users": len(self._user_ids)}

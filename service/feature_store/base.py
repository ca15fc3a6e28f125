"""The feature-store interface the ranking code talks to.

A store answers two questions:

* ``get_user(user_id)`` — the raw features of one user, in **one** round trip
  (called once per request; it must never take longer than a bounded timeout).
* ``items()`` — the raw features of every item as an :class:`ItemTable`, held in
  memory. The model registry encodes it once per loaded model with that model's
  ``FeatureEncoder`` (the training code's encoder: no train/serve skew), so a
  request gathers pre-encoded rows instead of calling the store per candidate.

Values are *raw* (what the logs hold: ints, strings, floats, lists for
multi-valued features); encoding is the model's business, not the store's.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

try:  # pandas' own hash table; pd.Index.get_indexer (same table, slower) when it moves
    from pandas._libs.hashtable import Int64HashTable as _Int64HashTable
except ImportError:  # pragma: no cover - depends on the pandas version
    _Int64HashTable = None


class FeatureStoreError(RuntimeError):
    """The store cannot be opened (missing files, bad layout); names the problem."""


class IdIndex:
    """Hash index over unique int64 ids: id -> row (timings: see docs/BENCHMARKS.md).

    ``np.searchsorted`` over unsorted query ids costs several times more (cache
    misses of the binary search). The lookup probes pandas' int64 hash table
    directly: ``pandas.Index.get_indexer`` probes the same table but first wraps
    the query in an ``Index``, which costs more than the probes.

    Args:
        ids: int64 ``[N]`` unique ids.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._index = pd.Index(self.ids)
        if not self._index.is_unique:
            raise ValueError("ids must be unique")
        self._table: Any = None
        if _Int64HashTable is not None:
            self._table = _Int64HashTable(max(len(self.ids), 1))
            self._table.map_locations(self.ids)
        else:
            self._index.get_indexer(self.ids[:1])  # builds the hash table now, not on a request

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each id and whether it exists.

        Args:
            ids: int64 ``[K]``.

        Returns:
            ``(rows int64 [K], found bool [K])``; rows of missing ids are -1.
        """
        if self._table is not None:
            rows = self._table.lookup(np.ascontiguousarray(ids, dtype=np.int64))
        else:
            rows = self._index.get_indexer(ids)
        rows = rows.astype(np.int64, copy=False)
        return rows, rows >= 0


@dataclass(frozen=True)
class ItemTable:
    """Raw item features, one row per item, sorted by id.

    Attributes:
        ids: int64 ``[N]`` sorted, unique item ids.
        columns: feature name -> array ``[N]`` aligned with ``ids`` (object arrays
            hold strings, ``None`` or per-row lists for multi-valued features).
        version: identifies the content; a model re-encodes when it changes.
    """

    ids: np.ndarray
    columns: Mapping[str, np.ndarray]
    version: str
    index: IdIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", IdIndex(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows int64 [K], found bool [K])`` of int64 ids (missing rows are -1)."""
        return self.index.positions(ids)

    def raw_row(self, row: int) -> dict[str, Any]:
        """The raw features of the item at ``row`` (for merging inline overrides)."""
        return {name: col[row] for name, col in self.columns.items()}

    @classmethod
    def empty(cls, version: str = "empty") -> ItemTable:
        return cls(np.zeros(0, dtype=np.int64), {}, version)


@dataclass(frozen=True)
class UserLookup:
    """Result of one user-feature lookup.

    Attributes:
        features: raw features (name -> value); empty when unknown or unavailable.
        found: the store knows this user.
        degraded: the store could not answer (timeout, error, circuit open), so
            defaults replace the user's features.
        seconds: time spent in the store.
    """

    features: Mapping[str, Any] = field(default_factory=dict)
    found: bool = False
    degraded: bool = False
    seconds: float = 0.0


class FeatureStore(abc.ABC):
    """Interface of a feature store (embedded in-process, or Redis)."""

    #: label of the ``store`` metric dimension
    kind: str = "abstract"

    @abc.abstractmethod
    def get_user(self, user_id: int) -> UserLookup:
        """Raw features of one user; never raises for store failures (degraded instead)."""

    @abc.abstractmethod
    def items(self) -> ItemTable:
        """The in-memory item table (cheap: returns the held reference)."""

    def items_available(self) -> bool:
        """False while item features could not be loaded (requests are then degraded)."""
        return True

    def refresh(self) -> bool:
        """Re-read item features if they changed; True when the table was replaced."""
        return False

    def status(self) -> dict[str, Any]:
        """Small JSON-able status for ``/v1/models``."""
        table = self.items()
        return {"kind": self.kind, "items": len(table), "items_version": table.version}

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections."""

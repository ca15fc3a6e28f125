"""Encoded splits as columns of tensors, and columnar batching.

A split is encoded once into one tensor per feature, label, group and user
(see ``docs/INTERNALS.md``, "Data layer → trainer"); a batch is a set of
``index_select`` slices of those columns, never a per-sample Python loop.

Typical use::

    data = load_dataset("data/", tasks=["ctr"])        # training.data.loader
    train = data.split("train", task="ctr")            # applies the task's ``where``
    for batch in train.iter_batches(4096, shuffle=True, seed=0, epoch=epoch):
        logits = model(batch.features)
        loss = bce(logits, batch.labels["click"])

Shuffling is the chunked shuffle of :mod:`training.data.shuffle`, so
:class:`training.data.streaming.StreamingSplit` yields identical batches.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.contract.features import EncodeReport, FeatureEncoder
from training.data.encoding import encode_features, fit_encoder
from training.data.schema import Schema
from training.data.shuffle import CHUNK_ROWS, epoch_order, request_plan

log = logging.getLogger(__name__)

# bump when the encoded layout or the saved-split layout changes
_SPLIT_FORMAT = 1


@dataclass
class Batch:
    """One mini-batch of B rows.

    Attributes:
        features: name → ``int64 [B]`` (categorical / bucketised), ``int64 [B, L]``
            (multi-valued) or ``float32 [B]`` (numeric).
        labels: label name → ``float32 [B]``.
        group: ``int64 [B]`` request id (user id when the log has none).
        user: ``int64 [B]`` raw user id.
    """

    features: dict[str, Tensor]
    labels: dict[str, Tensor]
    group: Tensor
    user: Tensor

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {k: v.to(device) for k, v in self.features.items()},
            {k: v.to(device) for k, v in self.labels.items()},
            self.group.to(device),
            self.user.to(device),
        )


# --------------------------------------------------------------------------- encoding


def _int_ids(values: np.ndarray) -> np.ndarray:
    """Validated id column (int64, or integral floats without nulls) as int64."""
    if values.dtype == object:
        return np.asarray(values.tolist(), dtype=np.int64)
    return values.astype(np.int64)


@dataclass
class EncodedColumns:
    """A split (or a chunk of one) after encoding, as tensors of N rows."""

    features: dict[str, Tensor]
    labels: dict[str, Tensor]
    group: Tensor
    user: Tensor

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, index: Tensor) -> EncodedColumns:
        """Rows ``index`` (``int64 [M]``) of every column, via ``index_select``."""
        return EncodedColumns(
            {k: v.index_select(0, index) for k, v in self.features.items()},
            {k: v.index_select(0, index) for k, v in self.labels.items()},
            self.group.index_select(0, index),
            self.user.index_select(0, index),
        )

    @staticmethod
    def concat(parts: Sequence[EncodedColumns]) -> EncodedColumns:
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return EncodedColumns(
            {k: torch.cat([p.features[k] for p in parts]) for k in first.features},
            {k: torch.cat([p.labels[k] for p in parts]) for k in first.labels},
            torch.cat([p.group for p in parts]),
            torch.cat([p.user for p in parts]),
        )

    def to_batch(self) -> Batch:
        return Batch(self.features, self.labels, self.group, self.user)


def encode_columns(
    schema: Schema,
    encoder: FeatureEncoder,
    columns: Mapping[str, np.ndarray],
    report: EncodeReport | None = None,
    encoded: Mapping[str, np.ndarray] | None = None,
) -> EncodedColumns:
    """Encode validated canonical columns into tensors.

    Encoding is row-wise, so encoding a file chunk by chunk gives the same
    values as encoding it whole (streaming relies on this).

    Args:
        schema: the log schema (ids and labels).
        encoder: the fitted encoder (features).
        columns: canonical columns holding every required column.
        report: accumulates imputed / OOV counts.
        encoded: features already encoded (see :func:`encode_features`).
    """
    encoded = encode_features(encoder, columns, report, encoded)
    features = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in encoded.items()}
    labels = {
        name: torch.from_numpy(np.asarray(columns[lab.column], dtype=np.float32))
        for name, lab in schema.labels.items()
    }
    user = torch.from_numpy(_int_ids(columns[schema.ids.user]))
    request = schema.ids.request
    if request and request in columns:
        group = torch.from_numpy(_int_ids(columns[request]))
    else:
        group = user.clone()
    return EncodedColumns(features, labels, group, user)


# --------------------------------------------------------------------------- splits


class EncodedSplit:
    """One encoded split held in memory, batched column-wise.

    Attributes:
        features, labels, group, user: see :class:`Batch` (N rows instead of B).
        source_rows: ``int64 [N]`` position of each row in the split file
            (``arange(N)`` unless rows were filtered).
        n_source_rows: rows in the split file.
        chunk_rows: chunk size of the chunked shuffle.
        name: split name (for messages).
    """

    def __init__(
        self,
        columns: EncodedColumns,
        *,
        source_rows: Tensor | None = None,
        n_source_rows: int | None = None,
        chunk_rows: int = CHUNK_ROWS,
        name: str = "",
    ) -> None:
        n = len(columns)
        self._columns = columns
        self.source_rows = (
            torch.arange(n, dtype=torch.int64) if source_rows is None else source_rows
        )
        self.n_source_rows = n if n_source_rows is None else int(n_source_rows)
        if len(self.source_rows) != n:
            raise ValueError(f"source_rows has {len(self.source_rows)} rows, columns have {n}")
        self.chunk_rows = int(chunk_rows)
        self.name = name

    @property
    def features(self) -> dict[str, Tensor]:
        return self._columns.features

    @property
    def labels(self) -> dict[str, Tensor]:
        return self._columns.labels

    @property
    def group(self) -> Tensor:
        return self._columns.group

    @property
    def user(self) -> Tensor:
        return self._columns.user

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return f"EncodedSplit({self.name!r}, rows={len(self)}, features={len(self.features)})"

    # ----------------------------------------------------------------- filtering
    def filter_rows(self, mask: Tensor | np.ndarray) -> EncodedSplit:
        """Keep rows where ``mask`` (``bool [N]``) is true; the shuffle plan is kept."""
        mask_t = torch.as_tensor(mask, dtype=torch.bool)
        if mask_t.shape != (len(self),):
            raise ValueError(f"mask must have shape ({len(self)},), got {tuple(mask_t.shape)}")
        index = torch.nonzero(mask_t, as_tuple=False).flatten()
        return EncodedSplit(
            self._columns.take(index),
            source_rows=self.source_rows.index_select(0, index),
            n_source_rows=self.n_source_rows,
            chunk_rows=self.chunk_rows,
            name=self.name,
        )

    def for_task(self, schema: Schema, task: str) -> EncodedSplit:
        """The rows a task trains and evaluates on (its ``where`` label == 1)."""
        where = schema.task(task).where
        if where is None:
            return self
        return self.filter_rows(self.labels[where] == 1)

    # ----------------------------------------------------------------- batching
    def order(self, shuffle: bool, seed: int = 0, epoch: int = 0) -> Tensor:
        """Row indices (``int64 [N]``) of an epoch in batch order."""
        n = len(self)
        if not shuffle:
            return torch.arange(n, dtype=torch.int64)
        source_order = torch.from_numpy(
            epoch_order(self.n_source_rows, self.chunk_rows, seed, epoch)
        )
        if n == self.n_source_rows:
            return source_order
        # map file positions to local rows; filtered-out rows are -1 and dropped
        local = torch.full((self.n_source_rows,), -1, dtype=torch.int64)
        local[self.source_rows] = torch.arange(n, dtype=torch.int64)
        mapped = local.index_select(0, source_order)
        return mapped[mapped >= 0]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        unit: str = "rows",
    ) -> Iterator[Batch]:
        """Yield batches of ``batch_size`` rows (the last one may be shorter).

        Args:
            batch_size: rows per batch (> 0).
            shuffle: chunked shuffle (see :mod:`training.data.shuffle`) when true,
                file order otherwise.
            seed, epoch: the shuffle is a function of both (a resumed run skips the
                batches it already trained with ``itertools.islice``).
            unit: with ``shuffle``, ``"requests"`` permutes whole requests and cuts
                batches at request boundaries (``shuffle.request_plan``).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if unit not in ("rows", "requests"):
            raise ValueError(f"unit must be 'rows' or 'requests', got {unit!r}")
        if shuffle and unit == "requests":
            plan, starts = request_plan(self.group.numpy(), batch_size, seed, epoch)
            rows = torch.from_numpy(plan)
            for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
                yield self._columns.take(rows[a:b]).to_batch()
            return
        order = self.order(shuffle, seed, epoch)
        for start in range(0, len(order), batch_size):
            yield self._columns.take(order[start : start + batch_size]).to_batch()

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the encoded tensors (loadable with ``weights_only=True``), atomically."""
        blob = {
            "format": _SPLIT_FORMAT,
            "features": self.features,
            "labels": self.labels,
            "group": self.group,
            "user": self.user,
            "source_rows": self.source_rows,
            "n_source_rows": self.n_source_rows,
            "chunk_rows": self.chunk_rows,
            "name": self.name,
        }
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path) -> EncodedSplit:
        blob = torch.load(path, weights_only=True)
        if blob.get("format") != _SPLIT_FORMAT:
            raise ValueError(f"{path}: unsupported encoded-split format {blob.get('format')!r}")
        columns = EncodedColumns(blob["features"], blob["labels"], blob["group"], blob["user"])
        return cls(
            columns,
            source_rows=blob["source_rows"],
            n_source_rows=blob["n_source_rows"],
            chunk_rows=blob["chunk_rows"],
            name=blob["name"],
        )


def encode_split(
    schema: Schema,
    encoder: FeatureEncoder,
    columns: Mapping[str, np.ndarray],
    *,
    name: str = "",
    chunk_rows: int = CHUNK_ROWS,
    report: EncodeReport | None = None,
) -> EncodedSplit:
    """Encode a whole split held as canonical columns."""
    return EncodedSplit(
        encode_columns(schema, encoder, columns, report), chunk_rows=chunk_rows, name=name
    )


__all__ = [
    "Batch",
    "EncodedColumns",
    "EncodedSplit",
    "encode_columns",
    "encode_features",
    "encode_split",
    "fit_encoder",
]

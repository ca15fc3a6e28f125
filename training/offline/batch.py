"""``rocketrank predict``: score a log through an exported artifact into Parquet.

Parquet input is streamed ``chunk_rows`` rows at a time (``ParquetFile.iter_batches``)
and each scored chunk is appended to the output with a ``ParquetWriter``, so memory
is bounded by one chunk (plus the side tables) whatever the log's size. CSV input is
read whole (multi-valued cells are split on read), then scored in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.readers import Columns, read_table, table_to_columns
from training.evaluate import sigmoid
from training.offline.evaluation import LogSource
from training.offline.model_ref import load_verified
from training.offline.scoring import (
    CHUNK_ROWS,
    log_columns,
    read_side_tables,
    score_columns,
    with_side_features,
)


@dataclass(frozen=True)
class PredictResult:
    """What a predict run wrote."""

    model: str
    rows: int
    out: Path


def _chunks(path: Path, source: LogSource, columns: list[str], rows: int) -> Iterator[Columns]:
    if path.suffix == ".parquet":
        file = pq.ParquetFile(path)
        present = [c for c in columns if c in file.schema_arrow.names]
        for batch in file.iter_batches(batch_size=rows, columns=present):
            yield table_to_columns(pa.Table.from_batches([batch]))
        return
    table = read_table(path, source.schema, columns)
    for start in range(0, table.num_rows, rows):
        yield table_to_columns(table.slice(start, rows))


def count_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (``None`` for CSV: unknown until read)."""
    return pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None


def predict_log(
    model: str | Path,
    source: LogSource,
    out: Path,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
    public_key: str | Path | None = None,
    allow_unsigned: bool = False,
) -> PredictResult:
    """Score every row of ``source.path`` and write ids + ``logit`` + ``score`` to ``out``.

    The output has the log's user, item and (when present) request id columns,
    ``logit`` (float32, the light net's) and ``score`` (float32, its sigmoid), in
    the log's row order. It is written to ``out`` via a temporary file renamed at
    the end, so a failure leaves no partial output.
    """
    from tqdm import tqdm

    artifact = load_verified(model, public_key, allow_unsigned)
    schema = source.schema
    wanted = log_columns(artifact, schema)
    ids = [schema.ids.user, schema.ids.item] + ([schema.ids.request] if schema.ids.request else [])
    side = read_side_tables(source.side_tables, schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer: pq.ParquetWriter | None = None
    rows = 0
    bar = tqdm(total=count_rows(source.path), unit="rows", disable=not progress, unit_scale=True)
    try:
        for chunk in _chunks(source.path, source, wanted.all, chunk_rows):
            logits = score_columns(artifact, with_side_features(schema, chunk, side), chunk_rows)
            table = pa.table(
                {
                    **{
                        c: pa.array(np.asarray(chunk[c], dtype=np.int64)) for c in ids if c in chunk
                    },
                    "logit": pa.array(logits.astype(np.float32)),
                    "score": pa.array(sigmoid(logits).astype(np.float32)),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            rows += table.num_rows
            bar.update(table.num_rows)
        if writer is None:  # an empty log still gives a (typed, empty) output file
            empty = {c: pa.array([], pa.int64()) for c in ids}
            empty |= {"logit": pa.array([], pa.float32()), "score": pa.array([], pa.float32())}
            writer = pq.ParquetWriter(partial, pa.table(empty).schema)
        writer.close()
        writer = None
        partial.replace(out)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    name = f"{artifact.manifest.name}@{artifact.manifest.version}"
    return PredictResult(name, rows, out)


__all__ = ["PredictResult", "count_rows", "predict_log"]

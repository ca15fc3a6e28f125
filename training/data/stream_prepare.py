"""Open a data directory for streaming: one validation/fit pass, then chunked splits.

:func:`open_streaming` is the bounded-memory counterpart of
:func:`training.data.loader.load_dataset`:

1. one pass over every split, ``chunk_rows`` rows at a time and only the
   columns the schema needs, validates the data and fits the encoder on train
   (:func:`training.data.validate_stream.check_streaming`);
2. every split becomes a :class:`~training.data.streaming.StreamingSplit`
   (a CSV valid/test split, which has no row groups, is encoded in memory);
3. the result is cached in ``DATA_DIR/.rocketrank_cache/stream-<key>/``:
   ``meta.json`` (encoder, validation summary) and one ``chunk-<k>.pt`` per
   encoded chunk in ``train/``, ``valid/``, ``test/``, written the first time a
   chunk is encoded and read back by later epochs and runs. The key covers
   every data file's path, size and mtime, the schema, the task, the chunk size
   and the source of the reading/encoding code, like the in-memory cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.contract import categorical as contract_categorical
from models.contract import feature_spec as contract_feature_spec
from models.contract import features as contract_features
from models.contract import numeric as contract_numeric
from models.contract.features import EncodeReport, FeatureEncoder
from training.data import arrow_encode as arrow_encode_module
from training.data import chunk_cache as chunk_cache_module
from training.data import column_checks as column_checks_module
from training.data import data_dir as data_dir_module
from training.data import dataset as dataset_module
from training.data import encoding as encoding_module
from training.data import fit as fit_module
from training.data import heap as heap_module
from training.data import rank_shard as rank_shard_module
from training.data import readers as readers_module
from training.data import source as source_module
from training.data import streaming as streaming_module
from training.data import validate as validate_module
from training.data import validate_stream as validate_stream_module
from training.data.data_dir import DataFiles, find_data_files, resolve_schema
from training.data.dataset import EncodedSplit, encode_split
from training.data.loader import CACHE_DIR_NAME, load_dataset
from training.data.readers import read_columns
from training.data.schema import Schema
from training.data.source import SplitSource, file_stamps
from training.data.streaming import StreamingSplit
from training.data.validate import SplitSummary, ValidationReport
from training.data.validate_stream import check_streaming

log = logging.getLogger(__name__)

_FORMAT = 1
_CODE = (
    contract_features,
    contract_feature_spec,
    contract_categorical,
    contract_numeric,
    readers_module,
    data_dir_module,
    encoding_module,
    dataset_module,
    source_module,
    fit_module,
    streaming_module,
    arrow_encode_module,
    heap_module,
    chunk_cache_module,
    rank_shard_module,
    validate_module,
    column_checks_module,
    validate_stream_module,
)


@dataclass
class StreamedDataset:
    """A validated data directory whose splits are streamed (no split in memory).

    Attributes:
        schema: the log schema.
        encoder: the encoder fitted on train in one bounded-memory pass.
        validation: the validation report (per-split summaries; no problems).
        files: the directory's files.
        chunk_rows: rows per chunk.
        tasks: the tasks validated.
        from_cache: the validation and the fit came from the cache.
        encode_reports: empty (streamed chunks are not counted).
    """

    schema: Schema
    encoder: FeatureEncoder
    validation: ValidationReport
    files: DataFiles
    chunk_rows: int
    tasks: list[str]
    from_cache: bool = False
    encode_reports: dict[str, EncodeReport] = field(default_factory=dict)

    def split(self, name: str, task: str | None = None) -> EncodedSplit:
        """The split encoded **in memory** with this encoder (comparisons, small data:
        this materialises the split, unlike the streamed splits)."""
        data = load_dataset(
            self.files.root,
            self.schema,
            tasks=self.tasks,
            encoder=self.encoder,
            chunk_rows=self.chunk_rows,
        )
        return data.split(name, task=task)


def _key(files: DataFiles, schema: Schema, task: str, chunk_rows: int) -> str:
    code = hashlib.sha256()
    for module in _CODE:
        code.update(Path(module.__file__ or "").read_bytes())
    blob = json.dumps(
        {
            "format": _FORMAT,
            "code": code.hexdigest(),
            "schema": schema.to_dict(),
            "task": task,
            "chunk_rows": chunk_rows,
            "files": file_stamps([*files.splits.values(), *files.side_tables.values()]),
        },
        sort_keys=True,
        default=str,
    )
    return "stream-" + hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_meta(entry: Path) -> tuple[FeatureEncoder, ValidationReport] | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        encoder = FeatureEncoder.from_state(meta["encoder"])
        report = ValidationReport(
            tasks=list(meta["tasks"]),
            splits={k: SplitSummary(**v) for k, v in meta["validation"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)
    return encoder, report


def _write_meta(entry: Path, encoder: FeatureEncoder, report: ValidationReport) -> bool:
    meta: dict[str, Any] = {
        "encoder": encoder.state(),
        "tasks": report.tasks,
        "validation": {k: asdict(v) for k, v in report.splits.items()},
    }
    try:
        entry.mkdir(parents=True, exist_ok=True)
        tmp = entry / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, entry / "meta.json")
    except OSError as exc:  # read-only data directories still stream, without a cache
        log.warning("cannot write the streaming cache %s: %s", entry, exc)
        return False
    return True


def open_streaming(
    data_dir: str | Path,
    task: str,
    *,
    chunk_rows: int,
    cache: bool = True,
    schema: Schema | str | Path | None = None,
    fitted: tuple[dict[str, Any], ValidationReport] | None = None,
) -> tuple[StreamedDataset, dict[str, StreamingSplit | EncodedSplit]]:
    """Validate, fit and open every split of a data directory for streaming.

    Args:
        data_dir: the data directory (splits may be files, directories or Hive
            datasets, see :mod:`training.data.source`).
        task: the task trained (validated; its ``where`` filters every split).
        chunk_rows: rows read and encoded at a time (> 0).
        cache: reuse/store the fit and the encoded chunks in ``DATA_DIR/.rocketrank_cache``.
        schema: a schema or schema file; default ``DATA_DIR/schema.yaml``.
        fitted: ``(encoder state, validation report)`` another process computed
            for this directory (torchrun rank 0, see
            :func:`training.data.prepare.prepare_data`): no validation/fit pass.

    Returns:
        ``(dataset, {split name: split restricted to the task})``.

    Raises:
        DataValidationError: listing every problem found.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
    files = find_data_files(data_dir)
    schema = resolve_schema(files, schema)
    entry = files.root / CACHE_DIR_NAME / _key(files, schema, task, chunk_rows) if cache else None
    hit = _read_meta(entry) if entry is not None else None
    side = {name: read_columns(path, schema) for name, path in files.side_tables.items()}
    if hit is not None:
        encoder, report = hit
    elif fitted is not None:
        encoder, report = FeatureEncoder.from_state(fitted[0]), fitted[1]
    else:
        check = check_streaming(files, schema, [task], chunk_rows=chunk_rows, oov=False)
        check.report.raise_if_problems()
        assert check.encoder is not None
        encoder, report = check.encoder, check.report
        if entry is not None and not _write_meta(entry, encoder, report):
            entry = None
    dataset = StreamedDataset(
        schema, encoder, report, files, chunk_rows, [task], from_cache=hit is not None
    )
    splits: dict[str, StreamingSplit | EncodedSplit] = {}
    for name, path in files.splits.items():
        source = SplitSource(path)
        if source.streamable:
            splits[name] = StreamingSplit(
                source,
                schema,
                encoder,
                task=task,
                chunk_rows=chunk_rows,
                name=name,
                side_tables=side,
                cache_dir=None if entry is None else entry / name,
            )
        elif name == "train":
            from training.data.readers import DataReadError

            raise DataReadError(f"{path}: streaming the training split needs Parquet")
        else:
            columns = readers_module.join_side_tables(schema, read_columns(path, schema), side)
            encoded = encode_split(schema, encoder, columns, name=name, chunk_rows=chunk_rows)
            splits[name] = encoded.for_task(schema, task)
    return dataset, splits


__all__ = ["StreamedDataset", "open_streaming"]

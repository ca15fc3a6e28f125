"""Load a data directory: read, validate, fit the encoder, encode, with a disk cache.

:func:`load_dataset` is the one call the trainer needs::

    data = load_dataset("data/", tasks=["cvr"])
    train = data.split("train", task="cvr")     # clicked rows only
    valid = data.split("valid", task="cvr")
    data.encoder.save("encoder.json")

The encoded result is cached in ``DATA_DIR/.rocketrank_cache/<key>/`` (encoder,
validation summary, one ``.pt`` file of tensors per split). The key covers the
schema, the requested tasks, an encoder passed in, the chunk size, every data
file's path, size and mtime, and the source of the encoding code, so a
repeated run loads tensors without reading, validating or encoding the logs,
and any change to the data, schema or encoding code re-encodes. Only the two
most recently used entries are kept. A read-only data directory just skips
the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.contract import categorical as contract_categorical
from models.contract import feature_spec as contract_feature_spec
from models.contract import features as contract_features
from models.contract import numeric as contract_numeric
from models.contract.features import EncodeReport, FeatureEncoder
from training.data import data_dir as data_dir_module
from training.data import dataset as dataset_module
from training.data import encoding as encoding_module
from training.data import readers as readers_module
from training.data.data_dir import DataFiles, find_data_files, read_data_dir, resolve_schema
from training.data.dataset import EncodedSplit, encode_split, fit_encoder
from training.data.schema import Schema
from training.data.shuffle import CHUNK_ROWS
from training.data.source import file_stamps
from training.data.validate import SplitSummary, ValidationReport, validate_columns

log = logging.getLogger(__name__)

CACHE_DIR_NAME = ".rocketrank_cache"
CACHE_ENTRIES_KEPT = 2
_CACHE_FORMAT = 1


@dataclass
class Dataset:
    """A validated, encoded data directory.

    Attributes:
        schema: the log schema.
        encoder: the encoder fitted on train (or the one passed in).
        splits: split name → :class:`EncodedSplit` (all rows; see :meth:`split`).
        validation: the validation report (per-split summaries; no problems).
        encode_reports: split name → imputed/OOV counts of encoding.
        files: the files of the directory.
        from_cache: true when the tensors were loaded from the cache.
    """

    schema: Schema
    encoder: FeatureEncoder
    splits: dict[str, EncodedSplit]
    validation: ValidationReport
    encode_reports: dict[str, EncodeReport] = field(default_factory=dict)
    files: DataFiles | None = None
    from_cache: bool = False

    def split(self, name: str, task: str | None = None) -> EncodedSplit:
        """A split, restricted to a task's ``where`` rows when ``task`` is given."""
        if name not in self.splits:
            raise KeyError(f"no split {name!r}; have {sorted(self.splits)}")
        s = self.splits[name]
        return s if task is None else s.for_task(self.schema, task)


def load_dataset(
    data_dir: str | Path,
    schema: Schema | str | Path | None = None,
    *,
    tasks: Iterable[str] | None = None,
    encoder: FeatureEncoder | None = None,
    cache: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> Dataset:
    """Read, validate and encode a data directory (see the module docstring).

    Args:
        data_dir: holds ``train.*``, ``valid.*``, optional ``test.*``,
            ``users.parquet``, ``items.parquet`` and ``schema.yaml``.
        schema: a schema, a schema file, or ``None`` for ``DATA_DIR/schema.yaml``.
        tasks: tasks that will be trained (validated to exist and to have both
            label values in train); default every task of the schema.
        encoder: a fitted encoder to reuse (e.g. on resume); default: fit on train.
        cache: reuse/store the encoded result in ``DATA_DIR/.rocketrank_cache``.
        chunk_rows: chunk size of the chunked shuffle.

    Raises:
        DataValidationError: listing every problem found.
        SchemaError: the schema file is missing or invalid.
        DataReadError: a file cannot be read.
    """
    files = find_data_files(data_dir)
    schema = resolve_schema(files, schema)
    task_list = None if tasks is None else list(dict.fromkeys(tasks))
    entry = None
    if cache:
        entry = (
            files.root / CACHE_DIR_NAME / _cache_key(files, schema, task_list, encoder, chunk_rows)
        )
        hit = _read_entry(entry, schema, files)
        if hit is not None:
            return hit

    raw, side = read_data_dir(files, schema)
    report = validate_columns(schema, dict(raw), task_list, side_tables=side)
    report.raise_if_problems()
    if encoder is None:
        encoder = fit_encoder(schema, raw["train"])
    splits: dict[str, EncodedSplit] = {}
    reports: dict[str, EncodeReport] = {}
    for name, columns in raw.items():
        reports[name] = EncodeReport()
        splits[name] = encode_split(
            schema, encoder, columns, name=name, chunk_rows=chunk_rows, report=reports[name]
        )
    data = Dataset(schema, encoder, splits, report, reports, files)
    if entry is not None:
        _write_entry(entry, data)
    return data


# --------------------------------------------------------------------------- cache


def code_fingerprint() -> str:
    """Hash of the source that decides encoded values, so code changes re-encode."""
    digest = hashlib.sha256()
    for module in (
        contract_features,
        contract_feature_spec,
        contract_categorical,
        contract_numeric,
        readers_module,
        data_dir_module,
        encoding_module,
        dataset_module,
    ):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


def _cache_key(
    files: DataFiles,
    schema: Schema,
    tasks: list[str] | None,
    encoder: FeatureEncoder | None,
    chunk_rows: int,
) -> str:
    stamps = file_stamps([*files.splits.values(), *files.side_tables.values()])
    blob = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "code": code_fingerprint(),
            "schema": schema.to_dict(),
            "tasks": tasks,
            "encoder": None if encoder is None else encoder.state(),
            "chunk_rows": chunk_rows,
            "files": stamps,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_entry(entry: Path, schema: Schema, files: DataFiles) -> Dataset | None:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        encoder = FeatureEncoder.from_state(meta["encoder"])
        validation = ValidationReport(
            tasks=list(meta["tasks"]),
            splits={k: SplitSummary(**v) for k, v in meta["validation"].items()},
        )
        reports = {k: EncodeReport(**v) for k, v in meta["encode_reports"].items()}
        splits = {name: EncodedSplit.load(entry / f"{name}.pt") for name in meta["splits"]}
    except Exception as exc:  # a corrupt or foreign entry is rebuilt, never fatal
        log.warning("rebuilding unreadable cache entry %s: %s", entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    os.utime(entry)  # most recently used: kept by pruning
    return Dataset(schema, encoder, splits, validation, reports, files, from_cache=True)


def _write_entry(entry: Path, data: Dataset) -> None:
    meta: dict[str, Any] = {
        "encoder": data.encoder.state(),
        "tasks": data.validation.tasks,
        "validation": {k: asdict(v) for k, v in data.validation.splits.items()},
        "encode_reports": {k: asdict(v) for k, v in data.encode_reports.items()},
        "splits": list(data.splits),
    }
    try:
        entry.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}-"))
    except OSError as exc:  # read-only data directories still train
        log.warning("cannot write the encoded-data cache in %s: %s", entry.parent, exc)
        return
    try:
        for name, split in data.splits.items():
            split.save(tmp / f"{name}.pt")
        (tmp / "meta.json").write_text(json.dumps(meta))
        # atomic: readers see a complete entry or none; OSError: another run was first
        with contextlib.suppress(OSError):
            os.rename(tmp, entry)
    except OSError as exc:
        log.warning("cannot write the encoded-data cache %s: %s", entry, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(entry.parent)


def _prune(cache_dir: Path, keep: int = CACHE_ENTRIES_KEPT) -> None:
    entries, now = [], time.time()
    for path in cache_dir.iterdir():
        if not path.is_dir():
            continue
        if path.name.startswith("."):
            # half-written entry of a run that died; a live writer finishes within the hour
            if now - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
            continue
        entries.append(path)
    entries.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for stale in entries[keep:]:
        shutil.rmtree(stale, ignore_errors=True)


__all__ = ["CACHE_DIR_NAME", "Dataset", "load_dataset", "resolve_schema"]

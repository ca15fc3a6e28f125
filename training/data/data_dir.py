"""The layout of a data directory: where its splits, schema and side tables are.

A data directory holds ``train.parquet`` (or ``train.csv``, or a ``train/``
directory of Parquet files, possibly Hive-partitioned: see
:mod:`training.data.source`), ``valid.*``, ``test.*`` and ``schema.yaml``, and
optionally ``users.parquet`` and ``items.parquet`` (side tables keyed by the
user and item id). :func:`read_data_dir` reads them all into canonical columns
(see :mod:`training.data.readers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.data.readers import Columns, DataReadError, join_side_tables, read_columns
from training.data.schema import Schema, SchemaError, load_schema

SPLITS = ("train", "valid", "test")
SIDE_TABLES = ("users", "items")
FORMATS = (".parquet", ".csv")


@dataclass(frozen=True)
class DataFiles:
    """The files of one data directory.

    Attributes:
        root: the directory.
        splits: split name (``train``/``valid``/``test``) → file or directory
            (of Parquet files, see :mod:`training.data.source`), for those present.
        schema: ``schema.yaml`` when present.
        side_tables: ``users``/``items`` → file, for those present.
    """

    root: Path
    splits: dict[str, Path] = field(default_factory=dict)
    schema: Path | None = None
    side_tables: dict[str, Path] = field(default_factory=dict)


def find_data_files(data_dir: str | Path) -> DataFiles:
    """Locate the split files, schema and side tables of a data directory.

    Raises:
        DataReadError: the directory does not exist, or a split exists both as
            Parquet and as CSV (ambiguous).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataReadError(f"data directory not found: {root}")
    splits: dict[str, Path] = {}
    side: dict[str, Path] = {}
    for stem, target in [(s, splits) for s in SPLITS] + [(s, side) for s in SIDE_TABLES]:
        found = [root / f"{stem}{ext}" for ext in FORMATS if (root / f"{stem}{ext}").is_file()]
        if (root / stem).is_dir():
            found.append(root / stem)  # a directory of Parquet files / a Hive dataset
        if len(found) > 1:
            raise DataReadError(f"{root}: both {found[0].name} and {found[1].name} exist; keep one")
        if found:
            target[stem] = found[0]
    schema = root / "schema.yaml"
    return DataFiles(
        root=root, splits=splits, schema=schema if schema.is_file() else None, side_tables=side
    )


def resolve_schema(files: DataFiles, schema: Schema | str | Path | None) -> Schema:
    """The schema of a data directory: the one given, a schema file, or ``schema.yaml``.

    Raises:
        SchemaError: no schema file, or an invalid one.
    """
    if isinstance(schema, Schema):
        return schema
    if schema is not None:
        return load_schema(schema)
    if files.schema is None:
        raise SchemaError(f"{files.root}: no schema.yaml; pass the schema file explicitly")
    return load_schema(files.schema)


def read_data_dir(
    files: DataFiles, schema: Schema
) -> tuple[dict[str, Columns], dict[str, Columns]]:
    """Read every split and side table of a data directory.

    Returns:
        ``(splits, side_tables)``: split name → columns, with feature columns the
        split lacks joined from the side tables (see
        :func:`training.data.readers.join_side_tables`), and side table name → columns.
    """
    side = {name: read_columns(path, schema) for name, path in files.side_tables.items()}
    splits = {
        name: join_side_tables(schema, read_columns(path, schema), side)
        for name, path in files.splits.items()
    }
    return splits, side


__all__ = [
    "FORMATS",
    "SIDE_TABLES",
    "SPLITS",
    "DataFiles",
    "find_data_files",
    "read_data_dir",
    "resolve_schema",
]

"""Read log files (Parquet or CSV) into plain numpy columns.

Every reader returns :data:`Columns`, an ordered ``{column name: np.ndarray}``
mapping with one canonical representation per kind of value, whatever the file
format or the pandas/pyarrow type it came from:

* integers (any width, pandas nullable ``Int64``, pyarrow ints) → ``int64``;
  with nulls → ``float64`` with NaN when every value is exact in a float
  (``|v| < 2**53``), otherwise ``object`` holding Python ints and ``None``
* booleans → ``int64`` 0/1 (nulls as for integers)
* floats → ``float64`` (nulls → NaN)
* strings → ``object`` array of ``str`` (nulls → ``None``)
* lists (multi-valued categorical) → ``object`` array of 1-d numpy arrays
  (``int64`` or ``str`` elements; null lists → ``None``)
* timestamps/dates → ``datetime64``

Multi-valued categorical columns are list columns in Parquet and
separator-joined strings in CSV. The CSV reader splits them and, when every
token spells an integer, converts the tokens to ``int64``, so ``"3|5"`` in a
CSV file encodes exactly like ``[3, 5]`` in a Parquet file.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models.contract.feature_spec import FeatureType
from training.data.schema import Schema
from training.data.source import SourceError, SplitSource

Columns = dict[str, np.ndarray]
"""Ordered ``{column name: 1-d numpy array}``, all of one length."""

_EXACT_FLOAT_INT = 2**53


class DataReadError(ValueError):
    """A data file or directory cannot be read; the message names the file."""


# --------------------------------------------------------------------------- arrow → numpy


def arrow_to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Convert one pyarrow column to its canonical numpy representation.

    See the module docstring for the representation of each type.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    typ = array.type
    if pa.types.is_dictionary(typ):
        return arrow_to_numpy(array.dictionary_decode())
    if pa.types.is_boolean(typ):
        return arrow_to_numpy(pc.cast(array, pa.int64()))
    if pa.types.is_integer(typ):
        return _integers_to_numpy(array)
    if pa.types.is_floating(typ):
        return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False))
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return _lists_to_numpy(array)
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return np.asarray(array.to_numpy(zero_copy_only=False))
    return _object_array(array.to_pylist())


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-d object array (``np.asarray`` would build 2-d arrays from nested lists)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _integers_to_numpy(array: pa.Array) -> np.ndarray:
    if pa.types.is_uint64(array.type):
        # uint64 ids above 2**63 would wrap silently; refuse them
        max_value = pc.max(array).as_py()
        if max_value is not None and max_value >= 2**63:
            raise DataReadError(f"uint64 value {max_value} does not fit in int64")
    array = pc.cast(array, pa.int64())
    if array.null_count == 0:
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)
    lo, hi = pc.min(array).as_py(), pc.max(array).as_py()
    if lo is None or max(abs(lo), abs(hi)) < _EXACT_FLOAT_INT:
        return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False))
    return _object_array(array.to_pylist())


def _lists_to_numpy(array: pa.Array) -> np.ndarray:
    value_type = array.type.value_type
    if pa.types.is_integer(value_type) or pa.types.is_boolean(value_type):
        target = pa.int64()
    elif pa.types.is_floating(value_type):
        target = pa.float64()
    elif pa.types.is_dictionary(value_type):
        target = value_type.value_type
    else:
        target = value_type
    if target != value_type or not pa.types.is_list(array.type):
        array = pc.cast(array, pa.list_(target))
    if (
        pa.types.is_string(target)
        or pa.types.is_large_string(target)
        or target
        in (
            pa.int64(),
            pa.float64(),
        )
    ):
        # pyarrow builds the per-row arrays in C++ (≈2.5× faster than slicing in Python)
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)
    lengths = pc.fill_null(pc.list_value_length(array), 0)
    lengths = np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    # flatten() honours slicing and skips null lists, consistent with `lengths`
    flat = arrow_to_numpy(array.flatten())
    out = np.empty(len(array), dtype=object)
    if len(array):
        out[:] = np.split(flat, np.cumsum(lengths)[:-1])
        out[~valid] = None
    return out


def table_to_columns(table: pa.Table) -> Columns:
    """Convert every column of a pyarrow table (see :func:`arrow_to_numpy`)."""
    return {name: arrow_to_numpy(table.column(name)) for name in table.column_names}


def to_numpy_column(values: Any) -> np.ndarray:
    """Canonical numpy column from a pandas Series (including nullable and
    ``ArrowDtype`` columns), a pyarrow array, a numpy array or a list."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return arrow_to_numpy(values)
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.dtype.kind in "iu":
            return values.astype(np.int64, copy=False)
        if values.dtype.kind == "b":
            return values.astype(np.int64)
        if values.dtype.kind == "f":
            return values.astype(np.float64, copy=False)
        return values
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # mixed Python objects (e.g. numbers and strings): keep them for validation to report
        return _object_array(list(values))
    return arrow_to_numpy(array)


def frame_to_columns(frame: Any, columns: Iterable[str] | None = None) -> Columns:
    """Canonical columns from a pandas DataFrame (see :func:`to_numpy_column`)."""
    names = list(frame.columns) if columns is None else list(columns)
    return {str(name): to_numpy_column(frame[name]) for name in names}


def columns_to_frame(columns: Mapping[str, np.ndarray]) -> Any:
    """A pandas DataFrame over the columns (object columns are kept as is)."""
    import pandas as pd

    return pd.DataFrame({k: pd.Series(v, copy=False) for k, v in columns.items()})


# --------------------------------------------------------------------------- files


def multi_valued_columns(schema: Schema | None) -> dict[str, str]:
    """``{column: separator}`` of the schema's multi-valued categorical features."""
    if schema is None:
        return {}
    return {f.name: f.separator for f in schema.features if f.type is FeatureType.MULTI_CATEGORICAL}


def read_columns(
    path: str | Path,
    schema: Schema | None = None,
    columns: Iterable[str] | None = None,
) -> Columns:
    """Read a Parquet or CSV file into canonical numpy columns.

    Args:
        path: ``*.parquet`` or ``*.csv``.
        schema: tells the CSV reader which columns are multi-valued (split on
            their separator); unused for Parquet.
        columns: read only these columns (those absent from the file are
            silently skipped; validation reports them).

    Raises:
        DataReadError: the file is missing, unreadable or of an unknown format.
    """
    return table_to_columns(read_table(path, schema, columns))


def read_table(
    path: str | Path,
    schema: Schema | None = None,
    columns: Iterable[str] | None = None,
) -> pa.Table:
    """Read a Parquet or CSV file as a pyarrow table (multi-valued CSV cells split
    into lists, see the module docstring)."""
    path = Path(path)
    wanted = None if columns is None else list(dict.fromkeys(columns))
    try:
        if path.is_dir():
            return SplitSource(path).read_all(wanted)
        if path.suffix == ".parquet":
            present = pq.read_schema(path).names
            keep = None if wanted is None else [c for c in wanted if c in present]
            return pq.read_table(path, columns=keep)
        if path.suffix == ".csv":
            return _read_csv(path, multi_valued_columns(schema), wanted)
    except FileNotFoundError as exc:
        raise DataReadError(f"file not found: {path}") from exc
    except (pa.ArrowInvalid, OSError, SourceError) as exc:
        raise DataReadError(f"{path}: cannot read: {exc}") from exc
    raise DataReadError(f"{path}: unknown format (expected .parquet or .csv)")


def _read_csv(path: Path, multi: Mapping[str, str], wanted: list[str] | None) -> pa.Table:
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    keep = None if wanted is None else [c for c in wanted if c in header]
    bag_cols = [c for c in multi if c in header and (keep is None or c in keep)]
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in bag_cols},
        include_columns=keep,
        strings_can_be_null=True,
    )
    table = pacsv.read_csv(path, convert_options=convert)
    for name in bag_cols:
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, name, split_bags(table.column(name), multi[name]))
    return table


def split_bags(strings: pa.Array | pa.ChunkedArray, separator: str) -> pa.Array:
    """Split separator-joined strings into a list column, dropping empty tokens;
    tokens become ``int64`` when every one of them spells an integer. Null and
    empty cells become empty lists."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    lists = pc.split_pattern(strings, pattern=separator)
    tokens = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    keep = pc.not_equal(tokens, "")
    tokens, parents = pc.filter(tokens, keep), pc.filter(parents, keep)
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
        tokens = pc.cast(pc.utf8_trim_whitespace(tokens), pa.int64())
    counts = np.bincount(
        np.asarray(parents.to_numpy(zero_copy_only=False), dtype=np.int64), minlength=len(lists)
    )
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    # a CSV cannot tell an empty bag from a missing one: both become empty lists
    return pa.ListArray.from_arrays(pa.array(offsets), tokens)


def _take_with_nulls(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` where ``index == -1`` gives a null (canonical representation)."""
    miss = index < 0
    out = values[np.where(miss, 0, index)] if len(values) else np.zeros(len(index), values.dtype)
    if not miss.any():
        return out
    kind = out.dtype.kind
    if kind == "f":
        out[miss] = np.nan
    elif kind in "iu":
        big = len(out) and np.abs(out[~miss]).max(initial=0) >= _EXACT_FLOAT_INT
        out = out.astype(object) if big else out.astype(np.float64)
        out[miss] = None if big else np.nan
    elif kind == "M":
        out[miss] = np.datetime64("NaT")
    else:
        out = out.astype(object)
        out[miss] = None
    return out


def join_side_tables(
    schema: Schema, columns: Columns, side_tables: Mapping[str, Columns]
) -> Columns:
    """Fill in feature columns a split lacks from the ``users``/``items`` side tables.

    A feature column absent from the split but present in ``users`` (keyed by the
    user id) or ``items`` (keyed by the item id) is looked up by the row's id;
    ids missing from the side table give nulls (imputed / padded by the encoder).
    Columns the split already has are never replaced.

    Returns:
        ``columns`` plus the joined feature columns (a new mapping).
    """
    out = dict(columns)
    keys = {"users": schema.ids.user, "items": schema.ids.item}
    for table_name, key in keys.items():
        table = side_tables.get(table_name)
        wanted = [f.name for f in schema.features if f.name not in out]
        if table is None or key not in table or key not in columns or not wanted:
            continue
        found = [name for name in wanted if name in table]
        if not found:
            continue
        side_ids, row_ids = table[key], columns[key]
        if side_ids.dtype.kind not in "iu" or row_ids.dtype.kind not in "iuf":
            continue  # validation reports non-integer ids
        # keep="last" like the negative sampler's catalogue; duplicates are reported anyway
        last = len(side_ids) - 1 - np.unique(side_ids[::-1], return_index=True)[1]
        index = _hash_index(side_ids[last]).get_indexer(row_ids)
        index = np.where(index >= 0, last[np.maximum(index, 0)], -1)
        for name in found:
            out[name] = _take_with_nulls(table[name], index)
    return out


def _hash_index(values: np.ndarray) -> Any:
    """A pandas hash index over unique values (``get_indexer`` is ~0.1 ms per 10k ids)."""
    import pandas as pd

    return pd.Index(values)


__all__ = [
    "Columns",
    "DataReadError",
    "arrow_to_numpy",
    "columns_to_frame",
    "frame_to_columns",
    "join_side_tables",
    "multi_valued_columns",
    "read_columns",
    "read_table",
    "split_bags",
    "table_to_columns",
    "to_numpy_column",
]

"""Encode a streamed chunk from its Arrow table, skipping per-row Python objects.

:func:`encode_table` returns exactly what
``encode_columns(schema, encoder, join_side_tables(table_to_columns(table)))``
returns (tested value for value), cheaper for the two column kinds whose
canonical form costs a Python object per row:

* **string features** (not bags): Arrow's ``dictionary_encode`` (C++) finds the
  distinct strings of the chunk; the encoder encodes only those (plus ``None``
  for the nulls) and the codes pick every row's index. The encoding of a value
  does not depend on the other values of the column, so this is the same result.
* **bags of integers** (``list<int>`` columns): the flat values and the bag
  lengths come straight from the Arrow list offsets; truncation to ``max_len``
  and the ``[rows, max_len]`` layout are those of the encoder
  (``models.contract.features._bag_matrix``), and the flat ids are looked up
  (or hashed) the way the encoder does.

Every other column, and any column of these kinds that does not fit (bags with
null elements, string bags), goes through the ordinary path. The first pass of
a streamed epoch encodes every chunk on top of the training step, so this is
its cost (profiled at 1M rows: strings and bags were ~60 % of the encoding).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.contract.categorical import hash_bucket
from models.contract.feature_spec import Encoding, FeatureSpec, FeatureType
from models.contract.features import FeatureEncoder
from training.data.dataset import EncodedColumns, encode_columns
from training.data.readers import Columns, arrow_to_numpy, join_side_tables
from training.data.schema import Schema


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _encode_strings(encoder: FeatureEncoder, name: str, array: pa.Array) -> np.ndarray:
    """``int64 [rows]``: the encoder's indices of a string column, via its distinct values."""
    coded = pc.dictionary_encode(array)
    distinct = np.empty(len(coded.dictionary) + 1, dtype=object)
    distinct[:-1] = coded.dictionary.to_numpy(zero_copy_only=False)
    distinct[-1] = None  # the nulls' code
    codes = pc.fill_null(coded.indices, len(coded.dictionary)).to_numpy(zero_copy_only=False)
    return encoder.encode_column(name, distinct)[np.asarray(codes, dtype=np.int64)]


def _encode_int_bags(encoder: FeatureEncoder, spec: FeatureSpec, array: pa.Array) -> np.ndarray:
    """``int64 [rows, max_len]``: the encoder's bag encoding of a ``list<int>`` column."""
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
    lengths = np.asarray(lengths, dtype=np.int64)
    flat = np.asarray(pc.list_flatten(array).to_numpy(zero_copy_only=False), dtype=np.int64)
    kept = np.minimum(lengths, spec.max_len)
    within = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = flat[within < np.repeat(kept, lengths)]
    slots = np.arange(spec.max_len)[None, :] < kept[:, None]
    out = np.zeros((len(array), spec.max_len), dtype=np.int64)
    if len(flat):
        if spec.encoding is Encoding.HASH:
            out[slots] = hash_bucket(flat, spec.buckets)
        else:
            out[slots] = encoder.vocabs[spec.name].lookup(flat)
    return out


def _fast(encoder: FeatureEncoder, name: str, array: pa.Array) -> np.ndarray | None:
    """The cheap encoding of one column, or None when it takes the ordinary path."""
    spec = encoder.specs.get(name)
    if spec is None or spec.type is FeatureType.NUMERIC:
        return None
    typ = array.type
    if spec.is_bag:
        if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
            return None
        if not pa.types.is_integer(typ.value_type) or pc.list_flatten(array).null_count:
            return None
        return _encode_int_bags(encoder, spec, array)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _encode_strings(encoder, name, array)
    return None


def encode_table(
    schema: Schema,
    encoder: FeatureEncoder,
    table: pa.Table,
    side_tables: Mapping[str, Columns] | None = None,
) -> EncodedColumns:
    """Encode one chunk's table (the needed columns of the split) into tensors.

    Args:
        schema: the log schema.
        encoder: the fitted encoder.
        table: the chunk's rows (``StreamingSplit.read_rows``).
        side_tables: ``users``/``items`` columns joined for features the split lacks.
    """
    # columns read for ids, labels and the side-table join stay canonical too
    ids = schema.ids
    needed = {ids.user, ids.request, ids.item}
    needed |= {label.column for label in schema.labels.values()}
    encoded: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    for name in table.column_names:
        array = _combined(table.column(name))
        fast = _fast(encoder, name, array)
        if fast is not None:
            encoded[name] = fast
        if fast is None or name in needed:
            columns[name] = arrow_to_numpy(array)
    if side_tables:  # the split has the encoded columns: nothing is joined for them
        present = {n: encoded[n] for n in encoded if n not in columns}
        columns = dict(join_side_tables(schema, {**columns, **present}, side_tables))
        for name in present:
            del columns[name]
    return encode_columns(schema, encoder, columns, encoded=encoded)


__all__ = ["encode_table"]

"""Fit and apply the feature encoder to canonical columns (numpy only, no torch).

The encoding itself is :class:`models.contract.features.FeatureEncoder`; this
module only adapts canonical data-layer columns to it (see
:func:`_nullable_ints`), so ``rocketrank data check`` can fit and encode
without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.contract.feature_spec import PAD_INDEX, FeatureType
from models.contract.features import EncodeReport, FeatureEncoder
from training.data.schema import Schema


def _nullable_ints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(int64 values, null mask)`` of an object column of Python ints and ``None``.

    Readers produce such columns for integer ids beyond 2**53 with nulls (a float
    column would round them). The encoder would see objects and hash or look
    them up as strings, so the data layer encodes their int64 values instead.
    """
    if values.dtype != object:
        return None
    # set(map(type, ...)) runs at C speed and rules out string columns at once
    types = set(map(type, values))
    if None.__class__ not in types or types - {int, np.int64, None.__class__}:
        return None
    null = np.equal(values, None)
    present = values[~null]
    ints = np.zeros(len(values), dtype=np.int64)
    ints[~null] = np.asarray(present.tolist(), dtype=np.int64)
    return ints, null


def fit_encoder(schema: Schema, train_columns: Mapping[str, np.ndarray]) -> FeatureEncoder:
    """Fit the feature encoder of every schema feature on the training split only.

    Args:
        schema: the log schema (its features become the encoder's specs).
        train_columns: canonical train columns (see :mod:`training.data.readers`).
    """
    columns: dict[str, np.ndarray] = {}
    for f in schema.features:
        if f.name not in train_columns:
            continue
        values = train_columns[f.name]
        split = _nullable_ints(values) if f.type is FeatureType.CATEGORICAL else None
        columns[f.name] = values if split is None else split[0][~split[1]]
    return FeatureEncoder(list(schema.features)).fit(columns)


def encode_features(
    encoder: FeatureEncoder,
    columns: Mapping[str, np.ndarray],
    report: EncodeReport | None = None,
    encoded: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``encoder.transform`` of canonical columns (see :func:`_nullable_ints`).

    ``encoded``: features already encoded another way (``training.data.arrow_encode``),
    taken as they are.
    """
    encoded = encoded or {}
    special = {
        name: split
        for name in encoder.specs
        if name in columns
        and name not in encoded
        and encoder.specs[name].type is FeatureType.CATEGORICAL
        and (split := _nullable_ints(columns[name])) is not None
    }
    plain = [n for n in encoder.specs if n not in special and n not in encoded]
    out = {**encoder.transform(columns, names=plain, report=report), **encoded}
    for name, (ints, null) in special.items():
        column = np.full(len(ints), PAD_INDEX, dtype=np.int64)
        column[~null] = encoder.encode_column(name, ints[~null], report)
        out[name] = column
    if report is not None and special and not plain:
        report.rows += len(next(iter(special.values()))[0])
    return {name: out[name] for name in encoder.specs}


__all__ = ["encode_features", "fit_encoder"]

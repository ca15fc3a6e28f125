"""How a canonical column's values are classified, and the checks of one column.

:func:`value_kind` names what a column holds; the ``check_*`` functions return
the messages :mod:`training.data.validate` turns into problems, for an id, a
label, a numeric, categorical or multi-valued feature and a timestamp column.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- value kinds


def value_kind(values: np.ndarray) -> str:
    """Classify a canonical column (see :mod:`training.data.readers`).

    Returns one of ``int``, ``float``, ``str``, ``list``, ``datetime``, ``empty``
    (object column holding only nulls) or ``mixed``.
    """
    kind = values.dtype.kind
    if kind in "iub":
        return "int"
    if kind == "f":
        return "float"
    if kind == "M":
        return "datetime"
    if kind in "US":
        return "str"
    present = values[~null_mask(values)]
    # set(map(type, ...)) runs at C speed; only the few distinct types are classified
    kinds = {_TYPE_KINDS.get(t) or _python_kind(t) for t in set(map(type, present))}
    if not kinds:
        return "empty"
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "mixed"


_FLOAT_TYPES = (float, np.float64, np.float32, np.float16)
_TYPE_KINDS: dict[type, str] = {
    bool: "int",
    np.bool_: "int",
    int: "int",
    str: "str",
    list: "list",
    tuple: "list",
    np.ndarray: "list",
    **{t: "float" for t in _FLOAT_TYPES},
    **{t: "int" for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32)},
}


def _python_kind(t: type) -> str:
    if issubclass(t, bool | np.bool_ | int | np.integer):
        return "int"
    if issubclass(t, float | np.floating):
        return "float"
    if issubclass(t, str):
        return "str"
    if issubclass(t, list | tuple | np.ndarray):
        return "list"
    return t.__name__


def null_mask(values: np.ndarray) -> np.ndarray:
    """True where a canonical column holds a null (None or NaN; inf is not null)."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype == object:
        return np.asarray(pd.isna(values), dtype=bool)
    return np.zeros(len(values), dtype=bool)


def examples(values: Iterable[Any], limit: int = 3) -> str:
    """Up to ``limit`` distinct values, as reprs joined for a message."""
    out: list[str] = []
    for v in values:
        text = repr(v.item() if isinstance(v, np.generic) else v)
        if text not in out:
            out.append(text)
        if len(out) == limit:
            break
    return ", ".join(out)


def _non_numeric(values: np.ndarray) -> list[Any]:
    bad = []
    for v in values:
        if v is None:
            continue
        try:
            float(v)
        except (TypeError, ValueError):
            bad.append(v)
    return bad


# --------------------------------------------------------------------------- column checks


def check_id(values: np.ndarray, what: str) -> list[str]:
    """An id column: integers, no nulls (integral floats without nulls are accepted)."""
    kind = value_kind(values)
    if kind == "int":
        nulls = int(null_mask(values).sum())
        return [f"{what} has {nulls} null(s)"] if nulls else []
    if kind == "float" or (kind == "empty" and len(values)):
        nulls = int(null_mask(values).sum())
        x = values.astype(np.float64)
        finite = x[np.isfinite(x)]
        frac = finite[finite != np.round(finite)]
        msgs = []
        if len(frac):
            msgs.append(
                f"{what} must be integers; found {len(frac)} non-integer float(s) "
                f"(e.g. {examples(frac)})"
            )
        if nulls:
            msgs.append(f"{what} has {nulls} null(s)")
        n_inf = int(np.isinf(x).sum())
        if n_inf:
            msgs.append(f"{what} has {n_inf} infinite value(s)")
        return msgs
    if kind == "str":
        return [f"{what} must be integers; found strings (e.g. {examples(values)})"]
    return [f"{what} must be integers; found {kind} values (e.g. {examples(values)})"]


def check_label(values: np.ndarray) -> tuple[list[str], np.ndarray | None]:
    """Returns (messages, float labels or None when unusable)."""
    kind = value_kind(values)
    if kind not in ("int", "float"):
        return [f"label must be 0/1 numbers; found {kind} values (e.g. {examples(values)})"], None
    y = values.astype(np.float64)
    msgs = []
    nulls = int(np.isnan(y).sum())
    if nulls:
        msgs.append(f"label has {nulls} null(s)")
    outside = y[~np.isnan(y) & (y != 0) & (y != 1)]
    if len(outside):
        msgs.append(
            f"labels must be 0 or 1; {len(outside)} row(s) hold other values "
            f"(e.g. {examples(outside)})"
        )
    return msgs, y


def check_numeric(values: np.ndarray) -> tuple[list[str], int]:
    """Returns (messages, number of NaN/inf/null values the encoder will impute)."""
    kind = value_kind(values)
    if kind == "int":
        return [], 0
    if kind == "float":
        return [], int((~np.isfinite(values.astype(np.float64))).sum())
    if kind == "empty":
        return [], len(values)
    bad = _non_numeric(values)
    if kind == "str" or bad:
        return [f"numeric feature holds {len(bad)} non-numeric value(s) (e.g. {examples(bad)})"], 0
    return [f"numeric feature holds {kind} values (e.g. {examples(values)})"], 0


def check_categorical(values: np.ndarray) -> tuple[list[str], int]:
    """Returns (messages, number of nulls the encoder will map to padding)."""
    kind = value_kind(values)
    nulls = int(null_mask(values).sum())
    if kind in ("int", "str", "empty"):
        return [], nulls
    if kind == "float":
        x = values.astype(np.float64)
        finite = x[np.isfinite(x)]
        frac = finite[finite != np.round(finite)]
        if len(frac):
            return [
                f"categorical feature holds {len(frac)} non-integer float(s) "
                f"(e.g. {examples(frac)}); ids must be integers or strings"
            ], nulls
        return [], nulls + int(np.isinf(x).sum())
    if kind == "list":
        return ["single-valued categorical feature holds lists; declare it multi_categorical"], 0
    return [
        f"categorical feature must hold integers or strings; found {kind} values "
        f"(e.g. {examples(values)})"
    ], nulls


def check_bag(values: np.ndarray) -> tuple[list[str], int]:
    kind = value_kind(values)
    if kind in ("list", "str", "empty"):
        null = null_mask(values)
        empty = int(np.count_nonzero(np.fromiter(map(len, values[~null]), np.int64) == 0))
        return [], int(null.sum()) + empty
    return [
        "multi-valued feature must hold lists (Parquet) or separator-joined strings (CSV); "
        f"found {kind} values"
    ], 0


def check_timestamp(values: np.ndarray) -> list[str]:
    kind = value_kind(values)
    if kind in ("int", "float", "datetime"):
        return []
    return [f"timestamp must be numbers or datetimes; found {kind} values"]


__all__ = [
    "check_bag",
    "check_categorical",
    "check_id",
    "check_label",
    "check_numeric",
    "check_timestamp",
    "examples",
    "null_mask",
    "value_kind",
]

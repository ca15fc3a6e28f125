"""Check every split of a log against its schema before any training.

All problems are collected and reported at once (not the first one only), each
naming the split, the column and what is wrong:

* a split file that is missing or empty
* a column the schema requires that the split lacks
* a column of the wrong type: strings in a numeric column, floats with a
  fractional part (or strings) in an id column, lists in a single-valued
  categorical column, ...
* nulls in an id or label column, labels outside {0, 1}
* a label a requested task trains on that is all zeros or all ones in train
  (for a task with ``where``, among the rows it keeps)
* a requested task the schema does not define

NaN/inf in numeric features are *not* errors: the encoder imputes them; they
are counted in :class:`SplitSummary` so the check can report them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.contract.feature_spec import Encoding, FeatureType
from training.data.column_checks import (
    check_bag,
    check_categorical,
    check_id,
    check_label,
    check_numeric,
    check_timestamp,
    examples,
    null_mask,
    value_kind,
)
from training.data.readers import Columns
from training.data.schema import Schema

ANY = "*"
"""``Problem.split`` / ``Problem.column`` value for problems not tied to one."""

REQUIRED_SPLITS = ("train", "valid")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data.

    Attributes:
        split: ``train``/``valid``/``test``/``users``/``items``, or ``*``.
        column: the column concerned, or ``*``.
        message: what is wrong, in words a user can act on.
    """

    split: str
    column: str
    message: str

    def __str__(self) -> str:
        where = self.split if self.column == ANY else f"{self.split}.{self.column}"
        return f"[{where}] {self.message}"


class DataValidationError(ValueError):
    """The data does not match the schema; ``problems`` lists everything wrong."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} data problem(s):\n{lines}")


@dataclass
class SplitSummary:
    """What validation learned about one split.

    Attributes:
        rows: number of rows.
        label_rates: label name → mean of the label (valid rows only).
        nonfinite: numeric feature → NaN/inf/null count (imputed by the encoder).
        missing: categorical feature → null count, multi-valued feature → null
            or empty bag count (encoded as padding).
    """

    rows: int = 0
    label_rates: dict[str, float] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)


@dataclass
class ValidationReport:
    """Problems found plus per-split summaries (of the splits that could be read)."""

    problems: list[Problem] = field(default_factory=list)
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise :class:`DataValidationError` listing every problem, if any."""
        if self.problems:
            raise DataValidationError(self.problems)


# --------------------------------------------------------------------------- validation


def _label_roles(schema: Schema) -> dict[str, str]:
    return {lab.column: name for name, lab in schema.labels.items()}


def validate_split(
    schema: Schema, split: str, columns: Columns, summary: SplitSummary | None = None
) -> list[Problem]:
    """Check one split's columns against the schema (types, nulls, label values).

    Args:
        schema: the log schema.
        split: split name used in the problems.
        columns: canonical columns (see :mod:`training.data.readers`).
        summary: filled with row count, label rates and imputation counts.
    """
    summary = summary if summary is not None else SplitSummary()
    problems: list[Problem] = []
    lengths = {len(v) for v in columns.values()}
    rows = lengths.pop() if len(lengths) == 1 else 0
    summary.rows = rows
    if not columns or rows == 0:
        return [Problem(split, ANY, "split is empty (0 rows)")]

    ids = {schema.ids.user: "user id", schema.ids.item: "item id"}
    if schema.ids.request:
        ids[schema.ids.request] = "request id"
    labels = _label_roles(schema)
    missing = [c for c in schema.required_columns() if c not in columns]
    problems += [Problem(split, c, "required column is missing") for c in missing]

    for col, what in ids.items():
        if col in columns:
            problems += [Problem(split, col, m) for m in check_id(columns[col], what)]
    ts = schema.ids.timestamp
    if ts and ts in columns:
        problems += [Problem(split, ts, m) for m in check_timestamp(columns[ts])]
    for col, name in labels.items():
        if col not in columns:
            continue
        msgs, y = check_label(columns[col])
        problems += [Problem(split, col, m) for m in msgs]
        if y is not None and (~np.isnan(y)).any():
            summary.label_rates[name] = float(np.nanmean(y))
    for spec in schema.features:
        if spec.name not in columns or spec.name in ids:
            continue
        values = columns[spec.name]
        if spec.type is FeatureType.NUMERIC:
            msgs, bad = check_numeric(values)
            if bad:
                summary.nonfinite[spec.name] = bad
        elif spec.type is FeatureType.MULTI_CATEGORICAL:
            msgs, bad = check_bag(values)
            if bad:
                summary.missing[spec.name] = bad
        else:
            msgs, bad = check_categorical(values)
            if bad:
                summary.missing[spec.name] = bad
        problems += [Problem(split, spec.name, m) for m in msgs]
    return problems


def _check_task_labels(schema: Schema, task: str, train: Columns) -> list[Problem]:
    """A task's label must take both values in train (among its ``where`` rows)."""
    t = schema.tasks[task]
    col = schema.labels[t.label].column
    if col not in train:
        return []
    msgs, y = check_label(train[col])
    if msgs or y is None:
        return []
    rows = "train"
    if t.where:
        where_col = schema.labels[t.where].column
        if where_col not in train:
            return []
        wmsgs, w = check_label(train[where_col])
        if wmsgs or w is None:
            return []
        y = y[w == 1]
        rows = f"train rows where {t.where} == 1"
        if len(y) == 0:
            return [Problem("train", where_col, f"task {task!r}: no {rows}")]
    if (y == 0).all():
        return [Problem("train", col, f"task {task!r}: label is all zeros in {rows}")]
    if (y == 1).all():
        return [Problem("train", col, f"task {task!r}: label is all ones in {rows}")]
    return []


def _id_kind(values: np.ndarray, bag: bool) -> str:
    if bag and value_kind(values) == "list":
        present = values[~null_mask(values)]
        parts = [p for p in present if len(p)]
        return value_kind(np.concatenate(parts)) if parts else "empty"
    return value_kind(values)


def _check_hash_kinds(schema: Schema, splits: Mapping[str, Columns | None]) -> list[Problem]:
    """Hashed ids must be of one kind everywhere: ``"42"`` and ``42`` hash apart."""
    train = splits.get("train")
    problems: list[Problem] = []
    if train is None:
        return problems
    for spec in schema.features:
        if spec.encoding is not Encoding.HASH or spec.name not in train:
            continue
        bag = spec.type is FeatureType.MULTI_CATEGORICAL
        want = _id_kind(train[spec.name], bag)
        if want not in ("int", "str"):
            continue
        for split, columns in splits.items():
            if split == "train" or columns is None or spec.name not in columns:
                continue
            got = _id_kind(columns[spec.name], bag)
            if got in ("int", "str") and got != want:
                problems.append(
                    Problem(
                        split,
                        spec.name,
                        f"hashed feature holds {got} values but train holds {want} values; "
                        "they would hash to different buckets",
                    )
                )
    return problems


def _check_side_table(schema: Schema, name: str, columns: Columns) -> list[Problem]:
    key = schema.ids.user if name == "users" else schema.ids.item
    if key not in columns:
        return [Problem(name, key, "side table lacks its id column")]
    values = columns[key]
    problems = [Problem(name, key, m) for m in check_id(values, f"{name[:-1]} id")]
    if not problems:
        ids = values.astype(np.int64)
        uniq, counts = np.unique(ids, return_counts=True)
        dup = uniq[counts > 1]
        if len(dup):
            problems.append(
                Problem(name, key, f"{len(dup)} duplicated id(s) (e.g. {examples(dup)})")
            )
    return problems


def validate_columns(
    schema: Schema,
    splits: Mapping[str, Columns | None],
    tasks: Iterable[str] | None = None,
    side_tables: Mapping[str, Columns] | None = None,
    required_splits: Sequence[str] = REQUIRED_SPLITS,
) -> ValidationReport:
    """Validate every split (and side table) against the schema.

    Args:
        schema: the log schema.
        splits: split name → canonical columns; ``None`` marks a split whose
            file is missing.
        tasks: tasks that will be trained (default: every task of the schema).
        side_tables: ``users``/``items`` → columns, when present.
        required_splits: splits that must be present.

    Returns:
        A :class:`ValidationReport`; call ``raise_if_problems()`` to stop on errors.
    """
    report = ValidationReport()
    wanted = list(schema.tasks) if tasks is None else list(dict.fromkeys(tasks))
    for t in wanted:
        if t not in schema.tasks:
            report.problems.append(
                Problem(ANY, ANY, f"unknown task {t!r}; the schema defines {sorted(schema.tasks)}")
            )
    report.tasks = [t for t in wanted if t in schema.tasks]
    for split in required_splits:
        if splits.get(split) is None:
            report.problems.append(
                Problem(split, ANY, f"split file not found ({split}.parquet or {split}.csv)")
            )
    for split, columns in splits.items():
        if columns is None:
            continue
        summary = SplitSummary()
        report.problems += validate_split(schema, split, columns, summary)
        report.splits[split] = summary
    train = splits.get("train")
    if train is not None and report.splits.get("train", SplitSummary()).rows:
        for t in report.tasks:
            report.problems += _check_task_labels(schema, t, train)
        seen = {(p.split, p.column) for p in report.problems}
        report.problems += [
            p for p in _check_hash_kinds(schema, splits) if (p.split, p.column) not in seen
        ]
    for name, columns in (side_tables or {}).items():
        report.problems += _check_side_table(schema, name, columns)
    return report


__all__ = [
    "ANY",
    "DataValidationError",
    "Problem",
    "SplitSummary",
    "ValidationReport",
    "validate_columns",
    "validate_split",
]

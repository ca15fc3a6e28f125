"""Validate a data directory and fit its encoder in one bounded-memory pass per split.

:func:`check_streaming` reads every split chunk by chunk (only the columns the
schema needs), runs the per-split checks of :mod:`training.data.validate` on
each chunk and merges what they find into one :class:`ValidationReport`:

* problems are reported once per ``(split, column, kind of problem)``, with
  counts summed over chunks where the message carries a count;
* summaries: rows summed, label rates from summed label sums, imputed and
  missing counts summed;
* the task-label check ("all zeros / all ones in train") from per-task counts;
* the hashed-feature kind check from the set of value kinds seen per split.

The same pass over train feeds :class:`training.data.fit.EncoderFitter`, and
valid/test passes count the out-of-vocabulary rate per vocabulary feature, so
``rocketrank data check`` and the streaming training path never hold a split.
Side tables (``users``/``items``) are read whole: they grow with users and
items, not with impressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from models.contract.feature_spec import OOV_INDEX, PAD_INDEX, Encoding, FeatureType
from models.contract.features import FeatureEncoder
from training.data.column_checks import null_mask
from training.data.data_dir import DataFiles
from training.data.encoding import encode_features
from training.data.fit import SAMPLE_ROWS, EncoderFitter
from training.data.readers import (
    Columns,
    join_side_tables,
    read_columns,
    read_table,
    table_to_columns,
)
from training.data.schema import Schema
from training.data.source import SplitSource
from training.data.validate import (
    ANY,
    REQUIRED_SPLITS,
    Problem,
    SplitSummary,
    ValidationReport,
    _check_side_table,
    _id_kind,
    validate_split,
)

_NUMBER = re.compile(r"\d+")
# the count of a message such as "has 3 null(s)" or "2 row(s) hold other values"
_COUNT = re.compile(r"\d+(?= [^;()]*\(s\))")


@dataclass
class StreamCheck:
    """What one streaming pass learned.

    Attributes:
        report: the validation report (as :func:`validate_columns` would give).
        encoder: the encoder fitted on train, or None when the data has problems.
        oov_rate: ``{split: {feature: share of present values out of vocabulary}}``
            for valid/test.
        quantiles_exact: bucketised feature → its boundaries used every value.
        side_tables: the side tables read (for streaming their joins).
    """

    report: ValidationReport
    encoder: FeatureEncoder | None
    oov_rate: dict[str, dict[str, float | None]] = field(default_factory=dict)
    quantiles_exact: dict[str, bool] = field(default_factory=dict)
    side_tables: dict[str, Columns] = field(default_factory=dict)


@dataclass
class _SplitState:
    summary: SplitSummary = field(default_factory=SplitSummary)
    label_sums: dict[str, float] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    problems: dict[tuple[str, str, str], Problem] = field(default_factory=dict)
    kinds: dict[str, set[str]] = field(default_factory=dict)


def iter_split_columns(
    path, schema: Schema, chunk_rows: int, columns: Iterable[str] | None = None
) -> Iterable[Columns]:
    """Canonical columns of a split, ``chunk_rows`` rows at a time (a CSV split is
    read whole and cut into chunks: CSV has no row groups)."""
    wanted = list(dict.fromkeys(columns if columns is not None else schema.required_columns()))
    source = SplitSource(path)
    if source.streamable:
        for table in source.iter_tables(chunk_rows, wanted):
            columns = table_to_columns(table)
            # the Arrow buffers of a chunk must not outlive it while the caller works
            del table
            yield columns
            del columns
            pa.default_memory_pool().release_unused()
        return
    table = read_table(path, schema, wanted)
    for start in range(0, max(table.num_rows, 1), chunk_rows):
        yield table_to_columns(table.slice(start, chunk_rows))


def _merge_problem(state: _SplitState, problem: Problem) -> None:
    key = (problem.split, problem.column, _NUMBER.sub("#", problem.message))
    old = state.problems.get(key)
    if old is None:
        state.problems[key] = problem
        return
    # sum the leading count of messages like "has 3 null(s)" across chunks
    a, b = _COUNT.search(old.message), _COUNT.search(problem.message)
    if a and b and a.start() == b.start():
        total = int(a.group()) + int(b.group())
        message = old.message[: a.start()] + str(total) + old.message[a.end() :]
        state.problems[key] = Problem(old.split, old.column, message)


def _update_summary(
    state: _SplitState, schema: Schema, chunk: SplitSummary, columns: Columns
) -> None:
    s = state.summary
    s.rows += chunk.rows
    for key in ("nonfinite", "missing"):
        into, add = getattr(s, key), getattr(chunk, key)
        for name, count in add.items():
            into[name] = into.get(name, 0) + count
    for name, lab in schema.labels.items():
        if lab.column not in columns or name not in chunk.label_rates:
            continue
        y = np.asarray(columns[lab.column], dtype=np.float64)
        y = y[~np.isnan(y)]
        state.label_sums[name] = state.label_sums.get(name, 0.0) + float(y.sum())
        state.label_counts[name] = state.label_counts.get(name, 0) + len(y)


def check_streaming(
    files: DataFiles,
    schema: Schema,
    tasks: Iterable[str] | None = None,
    *,
    chunk_rows: int,
    fit: bool = True,
    sample_rows: int = SAMPLE_ROWS,
    oov: bool = True,
) -> StreamCheck:
    """Validate every split chunk by chunk, fit the encoder on train, count OOV rates.

    Args:
        files: the data directory's files.
        schema: the log schema.
        tasks: tasks that will be trained (default every task of the schema).
        chunk_rows: rows read at a time.
        fit: fit the encoder on train (when the data has no problems).
        sample_rows: quantile-sample size of bucketised features.
        oov: measure the OOV rate of valid/test (a second pass over them).
    """
    report = ValidationReport()
    wanted = list(schema.tasks) if tasks is None else list(dict.fromkeys(tasks))
    for t in wanted:
        if t not in schema.tasks:
            report.problems.append(
                Problem(ANY, ANY, f"unknown task {t!r}; the schema defines {sorted(schema.tasks)}")
            )
    report.tasks = [t for t in wanted if t in schema.tasks]
    for split in REQUIRED_SPLITS:
        if split not in files.splits:
            report.problems.append(
                Problem(split, ANY, f"split file not found ({split}.parquet or {split}.csv)")
            )
    side = {name: read_columns(path, schema) for name, path in files.side_tables.items()}
    for name, columns in side.items():
        report.problems += _check_side_table(schema, name, columns)
    fitter = EncoderFitter(schema, sample_rows=sample_rows) if fit else None
    # per task: [rows kept, positives] among train's where-rows
    task_counts = {t: [0, 0] for t in report.tasks}
    states: dict[str, _SplitState] = {}
    hashed = [f for f in schema.features if f.encoding is Encoding.HASH]
    for split, path in files.splits.items():
        state = states[split] = _SplitState()
        for columns in iter_split_columns(path, schema, chunk_rows):
            columns = join_side_tables(schema, columns, side) if side else columns
            chunk = SplitSummary()
            for problem in validate_split(schema, split, columns, chunk):
                _merge_problem(state, problem)
            _update_summary(state, schema, chunk, columns)
            for spec in hashed:
                if spec.name in columns:
                    kind = _id_kind(columns[spec.name], spec.type is FeatureType.MULTI_CATEGORICAL)
                    state.kinds.setdefault(spec.name, set()).add(kind)
            if split == "train":
                _count_task_labels(schema, report.tasks, columns, task_counts)
                if fitter is not None:
                    fitter.update(columns)
        _finish_split(state, split, report)
    if "train" in states and states["train"].summary.rows:
        report.problems += _task_label_problems(schema, report.tasks, task_counts)
        report.problems += _hash_kind_problems(schema, states)
    encoder = fitter.finish() if fitter is not None and report.ok else None
    out = StreamCheck(report, encoder, side_tables=side)
    if fitter is not None:
        out.quantiles_exact = fitter.quantiles_exact()
    if encoder is not None and oov:
        for split in ("valid", "test"):
            if split in files.splits:
                out.oov_rate[split] = _oov_rates(
                    encoder, schema, files.splits[split], chunk_rows, side
                )
    return out


def _finish_split(state: _SplitState, split: str, report: ValidationReport) -> None:
    s = state.summary
    s.label_rates = {
        n: state.label_sums[n] / state.label_counts[n]
        for n in state.label_sums
        if state.label_counts[n]
    }
    if s.rows == 0:
        state.problems = {(split, ANY, "empty"): Problem(split, ANY, "split is empty (0 rows)")}
    else:
        state.problems.pop((split, ANY, "split is empty (# rows)"), None)
    report.problems += list(state.problems.values())
    report.splits[split] = s


def _count_task_labels(
    schema: Schema, tasks: list[str], columns: Columns, counts: dict[str, list[int]]
) -> None:
    for t in tasks:
        task = schema.tasks[t]
        col = schema.labels[task.label].column
        if col not in columns or null_mask(columns[col]).any():
            continue
        y = np.asarray(columns[col], dtype=np.float64)
        if task.where:
            where_col = schema.labels[task.where].column
            if where_col not in columns:
                continue
            y = y[np.asarray(columns[where_col], dtype=np.float64) == 1]
        counts[t][0] += len(y)
        counts[t][1] += int((y == 1).sum())


def _task_label_problems(
    schema: Schema, tasks: list[str], counts: Mapping[str, list[int]]
) -> list[Problem]:
    problems = []
    for t in tasks:
        task = schema.tasks[t]
        col = schema.labels[task.label].column
        rows, positives = counts[t]
        where = "train" if not task.where else f"train rows where {task.where} == 1"
        if task.where and rows == 0:
            where_col = schema.labels[task.where].column
            problems.append(Problem("train", where_col, f"task {t!r}: no {where}"))
        elif rows and positives == 0:
            problems.append(Problem("train", col, f"task {t!r}: label is all zeros in {where}"))
        elif rows and positives == rows:
            problems.append(Problem("train", col, f"task {t!r}: label is all ones in {where}"))
    return problems


def _hash_kind_problems(schema: Schema, states: Mapping[str, _SplitState]) -> list[Problem]:
    problems = []
    train = states["train"]
    for name, kinds in train.kinds.items():
        want = {k for k in kinds if k != "empty"}
        if len(want) != 1 or next(iter(want)) not in ("int", "str"):
            continue
        (want_kind,) = want
        for split, state in states.items():
            got = {k for k in state.kinds.get(name, set()) if k in ("int", "str")}
            if split != "train" and got and got != {want_kind}:
                (got_kind,) = got - {want_kind} or got
                problems.append(
                    Problem(
                        split,
                        name,
                        f"hashed feature holds {got_kind} values but train holds {want_kind} "
                        "values; they would hash to different buckets",
                    )
                )
    return problems


def _oov_rates(
    encoder: FeatureEncoder, schema: Schema, path, chunk_rows: int, side: Mapping[str, Columns]
) -> dict[str, float | None]:
    names = [
        n
        for n, s in encoder.specs.items()
        if s.type is not FeatureType.NUMERIC and s.encoding is Encoding.VOCAB
    ]
    sub = encoder.subset(names)
    present = dict.fromkeys(names, 0)
    oov = dict.fromkeys(names, 0)
    ids = [schema.ids.user, schema.ids.item]
    for columns in iter_split_columns(path, schema, chunk_rows, [*names, *ids]):
        columns = join_side_tables(schema, columns, side) if side else columns
        here = [n for n in names if n in columns]
        for name, enc in encode_features(sub.subset(here), columns).items():
            present[name] += int((enc != PAD_INDEX).sum())
            oov[name] += int((enc == OOV_INDEX).sum())
    return {n: (oov[n] / present[n] if present[n] else None) for n in names}


__all__ = ["StreamCheck", "check_streaming", "iter_split_columns"]

"""``rocketrank data check``: validate a data directory against its schema.

Prints a summary (rows per split, label rates, feature cardinalities, OOV rate
of vocabulary features on valid/test, imputed NaN/inf counts) on stdout and exits
0 when the data is valid; otherwise lists every problem on stderr and exits 1
(2, also on stderr, when the schema or the directory itself cannot be used).

Example::

    rocketrank data check --data data/ --task ctr --task cvr
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.contract.feature_spec import OOV_INDEX, PAD_INDEX, Encoding, FeatureType
from models.contract.features import FeatureEncoder
from training.data.data_dir import find_data_files, resolve_schema
from training.data.encoding import encode_features
from training.data.readers import DataReadError
from training.data.schema import Schema, SchemaError
from training.data.validate import ValidationReport
from training.data.validate_stream import check_streaming

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_UNUSABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="data directory")
    parser.add_argument(
        "--schema", type=Path, default=None, help="schema file (default: DATA/schema.yaml)"
    )
    parser.add_argument(
        "--task",
        action="append",
        default=None,
        metavar="T",
        help="task to check (repeatable; default: every task of the schema)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the summary as JSON"
    )


def oov_rates(
    encoder: FeatureEncoder, columns: Mapping[str, np.ndarray]
) -> dict[str, float | None]:
    """Share of present values of each vocabulary feature that are out of vocabulary.

    Returns ``None`` for a feature with no present value in ``columns``.
    """
    names = [
        n
        for n, s in encoder.specs.items()
        if s.type is not FeatureType.NUMERIC and s.encoding is Encoding.VOCAB and n in columns
    ]
    out: dict[str, float | None] = {}
    for name, enc in encode_features(encoder.subset(names), columns).items():
        present = int((enc != PAD_INDEX).sum())
        out[name] = float((enc == OOV_INDEX).sum()) / present if present else None
    return out


def build_summary(
    schema: Schema,
    report: ValidationReport,
    encoder: FeatureEncoder | None,
    splits: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, Any]:
    """A JSON-able summary of a checked data directory."""
    summary: dict[str, Any] = {
        "schema": schema.name,
        "tasks": report.tasks,
        "valid": report.ok,
        "problems": [
            {"split": p.split, "column": p.column, "message": p.message} for p in report.problems
        ],
        "splits": {
            name: {
                "rows": s.rows,
                "label_rates": s.label_rates,
                "imputed": s.nonfinite,
                "missing": s.missing,
            }
            for name, s in report.splits.items()
        },
    }
    if encoder is not None:
        summary["features"] = {
            name: {
                "type": str(spec.type),
                "side": str(spec.side),
                "encoding": (
                    "bucketize"
                    if spec.type is FeatureType.NUMERIC and spec.is_sparse
                    else str(spec.encoding)
                    if spec.is_sparse
                    else None
                ),
                "cardinality": encoder.cardinality(name) if spec.is_sparse else None,
            }
            for name, spec in encoder.specs.items()
        }
        summary["oov_rate"] = {
            name: oov_rates(encoder, splits[name]) for name in ("valid", "test") if name in splits
        }
    return summary


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable rendering of :func:`build_summary`."""
    lines = [f"schema {summary['schema']!r}, tasks: {', '.join(summary['tasks']) or '-'}"]
    splits = summary["splits"]
    labels = sorted({k for s in splits.values() for k in s["label_rates"]})
    lines.append("")
    lines.append(f"{'split':<8}{'rows':>12}" + "".join(f"{lab:>14}" for lab in labels))
    for name, s in splits.items():
        rates = "".join(f"{_pct(s['label_rates'].get(lab)):>14}" for lab in labels)
        lines.append(f"{name:<8}{s['rows']:>12,}{rates}")
    features = summary.get("features")
    if features:
        oov = summary.get("oov_rate", {})
        lines.append("")
        header = f"{'feature':<28}{'type':<19}{'side':<9}{'encoding':<10}{'cardinality':>12}"
        header += "".join(f"{'oov ' + s:>12}" for s in oov)
        lines.append(header)
        for name, f in features.items():
            card = "-" if f["cardinality"] is None else f"{f['cardinality']:,}"
            row = f"{name:<28}{f['type']:<19}{f['side']:<9}{f['encoding'] or '-':<10}{card:>12}"
            row += "".join(f"{_pct(rates.get(name)):>12}" for rates in oov.values())
            lines.append(row)
    for key, title in (
        ("imputed", "imputed NaN/inf in numeric features"),
        ("missing", "missing categorical values (encoded as padding)"),
    ):
        counts = {n: s[key] for n, s in splits.items() if s[key]}
        if counts:
            lines.append("")
            lines.append(f"{title}:")
            for feature in sorted({f for c in counts.values() for f in c}):
                per = ", ".join(f"{n} {c[feature]:,}" for n, c in counts.items() if feature in c)
                lines.append(f"  {feature}: {per}")
    return "\n".join(lines)


CHECK_CHUNK_ROWS = 500_000
"""Rows read at a time by `data check`."""


def check(
    data_dir: Path, schema_path: Path | None, tasks: Sequence[str] | None
) -> tuple[dict[str, Any], Schema]:
    """Read, validate and summarise a data directory (no exit codes, no printing).

    Raises:
        SchemaError, DataReadError: the schema or the directory cannot be used.
    """
    files = find_data_files(data_dir)
    schema = resolve_schema(files, schema_path)
    # One bounded-memory pass per split (training.data.validate_stream): the log is
    # never held whole, so a 10M-row log checks in about 1 GB.
    result = check_streaming(files, schema, tasks, chunk_rows=CHECK_CHUNK_ROWS)
    summary = build_summary(schema, result.report, result.encoder, {})
    if result.encoder is not None:
        summary["oov_rate"] = result.oov_rate
    return summary, schema


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        summary, _ = check(args.data, args.schema, args.task)
    except (SchemaError, DataReadError) as exc:
        print(f"data check FAILED: {exc}", file=err)
        return EXIT_UNUSABLE
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    print(format_summary(summary), file=out)
    problems = summary["problems"]
    if problems:
        out.flush()
        print(f"\ndata check FAILED: {len(problems)} problem(s):", file=err)
        for p in problems:
            where = p["split"] if p["column"] == "*" else f"{p['split']}.{p['column']}"
            print(f"  - [{where}] {p['message']}", file=err)
        return EXIT_INVALID
    print(f"\ndata check OK: {args.data}", file=out)
    return EXIT_OK

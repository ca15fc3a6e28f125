"""``rocketrank data negatives``: turn a positives-only log into a trainable one.

Reads every split of ``--data`` (purchases, ratings: rows that are all
positives), adds ``--per-positive`` sampled negatives per row from the item
catalogue (``items.parquet`` when present, else the items seen in train) with
:func:`training.data.negatives.sample_negatives`, and writes a new data
directory with the same schema and side tables. Ranking metrics then group by
user when the log has no request id.

Example::

    rocketrank data negatives --data purchases/ --out purchases_neg/ --per-positive 4
    rocketrank data check --data purchases_neg/
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from training.data.data_dir import find_data_files, resolve_schema
from training.data.negatives import item_catalogue, sample_negatives
from training.data.readers import DataReadError
from training.data.schema import SchemaError

_PROG = "rocketrank data negatives"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="positives-only data directory")
    parser.add_argument(
        "--out", required=True, type=Path, help="new data directory (must not exist)"
    )
    parser.add_argument("--per-positive", type=int, default=4, help="negatives per positive row")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the negative sampler (split i uses seed+i)"
    )
    parser.add_argument("--schema", type=Path, help="schema file (default DATA/schema.yaml)")


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def run(args: argparse.Namespace) -> int:
    if args.per_positive < 1:
        print(f"{_PROG}: --per-positive must be >= 1", file=sys.stderr)
        return 2
    try:
        files = find_data_files(args.data)
        schema = resolve_schema(files, args.schema)
    except (DataReadError, SchemaError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    if "train" not in files.splits:
        print(f"{_PROG}: --data {args.data}: no train split", file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"{_PROG}: --out {args.out} exists; choose a new directory", file=sys.stderr)
        return 2
    items_path = files.side_tables.get("items")
    catalogue = (
        _read(items_path) if items_path else item_catalogue(_read(files.splits["train"]), schema)
    )
    # Write into a sibling temp folder, then rename: a failure leaves nothing half-written.
    staging = args.out.with_name(f".{args.out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for offset, (split, path) in enumerate(sorted(files.splits.items())):
            positives = _read(path)
            rows = sample_negatives(
                positives, schema, catalogue, args.per_positive, args.seed + offset
            )
            rows.to_parquet(staging / f"{split}.parquet", index=False)
            print(f"{split}: {len(positives):,} positives -> {len(rows):,} rows")
        for path in files.side_tables.values():
            shutil.copyfile(path, staging / path.name)
        schema.save(staging / "schema.yaml")
        staging.rename(args.out)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {args.out}")
    return 0

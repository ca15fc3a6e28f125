"""``rocketrank eval``: the metrics of ``train`` for an EXPORTED model, on any split or log.

Loads the artifact as the service does (checksums and spec hash verified), encodes
the log with the artifact's own encoder, scores it with its TorchScript module and
computes AUC, GAUC, logloss, calibration, NDCG@10 and MAP@5 on the rows of the
model's task, grouped by request id as in training. So it measures what is served:
yesterday's model on today's log, or an int8 artifact against its fp32 twin.

``--model`` is ``REPO/NAME`` (the version ``current`` points at),
``REPO/NAME@VERSION`` or an artifact directory; ``--data`` a data directory
(``--split`` picks the file, default test) or one log file (its schema and
users/items tables are read from its directory).

Examples::

    rocketrank eval --model model_repo/fine --data data
    rocketrank eval --model model_repo/fine@20260101T000000Z --data data --split valid
    rocketrank eval --model model_repo/coarse --data new_logs/day2.parquet --json eval.json

Exit codes: 0 ok, 2 when the model, the data or the schema cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.contract.feature_spec import ContractError
from models.contract.manifest import ArtifactError
from training.data.readers import DataReadError
from training.data.schema import SchemaError
from training.offline.evaluation import evaluate_artifact, find_log
from training.offline.model_ref import ModelRefError, add_verification_arguments

METRICS = ("auc", "gauc", "logloss", "calibration", "ndcg@10", "map@5", "rows", "positive_rate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="REPO/NAME[@VERSION]",
        help="exported model: repository/name (current version), @VERSION, or artifact dir",
    )
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR|FILE", help="data directory or log file"
    )
    parser.add_argument(
        "--split",
        default=None,
        choices=["train", "valid", "test"],
        help="split of a data directory (default test)",
    )
    parser.add_argument(
        "--schema", type=Path, default=None, help="schema file (default: the data's schema.yaml)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the result as JSON"
    )
    add_verification_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        source = find_log(args.data, args.split, args.schema)
        result = evaluate_artifact(args.model, source, args.public_key, args.allow_unsigned)
    except (ModelRefError, ArtifactError, DataReadError, SchemaError, ContractError) as exc:
        print(f"rocketrank eval: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    m = result["metrics"]
    where = result["split"] or result["log"]
    print(f"{result['model']} (task {result['task']}) on {where}:")
    print("  " + "  ".join(f"{k} {m[k]:.6f}" if k != "rows" else f"rows {m[k]:,}" for k in METRICS))
    return 0

"""``rocketrank predict``: score a log with an EXPORTED model into a Parquet file.

Every row of ``--data`` gets the light net's ``logit`` and ``score`` (its sigmoid)
through the artifact (verified, encoded with its own encoder, as served). Parquet
logs are streamed ``--chunk-rows`` rows at a time, so memory stays bounded by one
chunk whatever the log's size; the output keeps the log's user, item and request
id columns and row order, and is renamed into place only when complete. Features
the log lacks are joined from the ``users``/``items`` tables in its directory.

Examples::

    rocketrank predict --model model_repo/fine --data data/test.parquet --out scores.parquet
    rocketrank predict --model model_repo/coarse@20260101T000000Z \\
        --data logs/today.parquet --out today_coarse.parquet --chunk-rows 200000

Exit codes: 0 ok, 2 when the model, the log or the schema cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.contract.feature_spec import ContractError
from models.contract.manifest import ArtifactError
from training.data.readers import DataReadError
from training.data.schema import SchemaError
from training.offline.batch import predict_log
from training.offline.evaluation import find_log
from training.offline.model_ref import ModelRefError, add_verification_arguments
from training.offline.scoring import CHUNK_ROWS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="REPO/NAME[@VERSION]",
        help="exported model: repository/name (current version), @VERSION, or artifact dir",
    )
    parser.add_argument(
        "--data", required=True, type=Path, metavar="FILE", help="log file (.parquet or .csv)"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="output .parquet")
    parser.add_argument(
        "--schema", type=Path, default=None, help="schema file (default: schema.yaml beside --data)"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=CHUNK_ROWS,
        metavar="N",
        help=f"rows read, scored and written at a time (default {CHUNK_ROWS:,})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_verification_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not args.data.is_file():
        print(f"rocketrank predict: --data {args.data}: not a file", file=sys.stderr)
        return 2
    if args.chunk_rows < 1:
        print("rocketrank predict: --chunk-rows must be >= 1", file=sys.stderr)
        return 2
    if args.out.suffix != ".parquet":
        print(f"rocketrank predict: --out {args.out}: must end in .parquet", file=sys.stderr)
        return 2
    try:
        source = find_log(args.data, None, args.schema)
        result = predict_log(
            args.model,
            source,
            args.out,
            args.chunk_rows,
            progress=not args.no_progress,
            public_key=args.public_key,
            allow_unsigned=args.allow_unsigned,
        )
    except (
        ModelRefError,
        ArtifactError,
        DataReadError,
        SchemaError,
        ContractError,
        ValueError,
    ) as exc:
        print(f"rocketrank predict: {exc}", file=sys.stderr)
        return 2
    print(f"{result.model}: scored {result.rows:,} rows -> {result.out}")
    return 0

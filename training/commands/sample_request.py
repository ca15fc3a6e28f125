"""``rocketrank sample-request``: print a ready-to-curl ``/v1/rank`` body from a log.

The user and the context are those of one logged impression (test split first),
the candidates real items of the catalogue (``items.parquet``), so the service
scores known ids with their stored features.

Examples::

    rocketrank sample-request --data data > request.json
    curl -s localhost:8000/v1/rank -H 'content-type: application/json' -d @request.json
    rocketrank sample-request --data data --stage fine --candidates 200 --top-k 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.data.readers import DataReadError
from training.data.schema import SchemaError
from training.offline.sample_request import STAGES, sample_request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="data directory (with schema)"
    )
    parser.add_argument(
        "--stage", choices=STAGES, default="cascade", help="request's stage (default cascade)"
    )
    parser.add_argument(
        "--candidates", type=int, default=100, metavar="N", help="candidate items (default 100)"
    )
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="items returned")
    parser.add_argument(
        "--coarse-top-k",
        type=int,
        default=None,
        metavar="K",
        help="cascade: coarse survivors (default min(50, N), at least --top-k)",
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the user row and candidates")


def run(args: argparse.Namespace) -> int:
    try:
        body = sample_request(
            args.data, args.stage, args.candidates, args.top_k, args.coarse_top_k, args.seed
        )
    except (DataReadError, SchemaError, ValueError) as exc:
        print(f"rocketrank sample-request: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(body))
    return 0

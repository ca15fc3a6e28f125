"""``rocketrank ablate``: train every distillation variant and write the report.

Example::

    rocketrank ablate --config configs/fine_ctr.yaml --data data/ --out runs/fine_ablation
    rocketrank ablate --config configs/coarse_ctr.yaml --data data/ --out runs/coarse \\
        --variants light_alone pfd pfd_md --epochs 1

Writes ``DIR/report.json``, ``DIR/report.md``, ``DIR/report.png`` and one run
directory per variant; prints the Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.ablate.run import run_ablation
from training.ablate.variants import VARIANTS
from training.config import ConfigError, load_config
from training.data.prepare import prepare_data
from training.data.schema import SchemaError
from training.loop.checkpoint import CheckpointError
from training.loop.trainer import TrainingError, TrainOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="base run config YAML")
    parser.add_argument("--data", required=True, type=Path, help="data directory (with schema)")
    parser.add_argument("--out", required=True, type=Path, help="report directory (created)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=[v.value for v in VARIANTS],
        default=None,
        help="variants to train (default: every one that applies)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    parser.add_argument(
        "--max-rows", type=int, default=None, help="use at most N rows of each split"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep variants whose run directory already has metrics.json",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, see `train --help`)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        options = TrainOptions(
            epochs=args.epochs,
            checkpoint_every=0,
            progress=not args.no_progress,
            threads=args.threads,
        )
        data = prepare_data(args.data, cfg, max_rows=args.max_rows)
        run_ablation(
            cfg, data, args.out, options, variants=args.variants, reuse_finished=args.reuse
        )
    except (ConfigError, SchemaError, TrainingError, CheckpointError, ValueError) as exc:
        print(f"rocketrank ablate: {exc}", file=sys.stderr)
        return 2
    print((args.out / "report.md").read_text())
    print(
        f"report: {args.out / 'report.md'}, {args.out / 'report.json'}, {args.out / 'report.png'}"
    )
    return 0

"""``rocketrank train``: jointly train booster and light net on a data directory.

Example::

    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine
    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine --resume
    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine --nproc 2

Writes ``RUN/metrics.json``, ``RUN/model.pt``, ``RUN/curves.png`` and the rest of
the run directory described in ``training/loop/run_files.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from training.config import ConfigError, load_config
from training.data.prepare import prepare_data
from training.data.schema import SchemaError
from training.distill import Variant
from training.loop.build import load_trained_model
from training.loop.checkpoint import CheckpointError
from training.loop.distributed import SINGLE_PROCESS, DistributedError, init_from_env
from training.loop.trainer import TrainingError, TrainOptions, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="run config YAML")
    parser.add_argument("--data", required=True, type=Path, help="data directory (with schema)")
    parser.add_argument("--out", required=True, type=Path, help="run directory (created)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    parser.add_argument(
        "--max-rows", type=int, default=None, help="use at most N rows of each split"
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="finished booster run (RUN dir) for distill.variant two_stage_kd",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=500, help="checkpoint every N steps (0 = epochs)"
    )
    parser.add_argument(
        "--early-stopping-metric",
        choices=["auc", "logloss"],
        default="auc",
        help="validation metric for early stopping (default auc)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine a second thread made "
        "steps ~10x slower whenever other processes competed for the cores)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine, launched with torchrun (gloo on CPU); "
        "see docs/SCALING.md",
    )


def run(args: argparse.Namespace) -> int:
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        print(f"rocketrank train: --nproc must be >= 1, got {nproc}", file=sys.stderr)
        return 2
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from training.loop.launch import launch

        return launch(nproc, args, threads=args.threads)
    dist = SINGLE_PROCESS
    try:
        # under torchrun: join the process group (an ordinary run otherwise)
        dist = init_from_env()
        cfg = load_config(args.config)
        options = TrainOptions(
            epochs=args.epochs,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            early_stopping_metric=args.early_stopping_metric,
            progress=not args.no_progress,
            threads=args.threads,
        )
        teacher = None
        if Variant(cfg.distill.variant) is Variant.TWO_STAGE_KD:
            if args.teacher is None:
                raise TrainingError(
                    "distill.variant two_stage_kd needs --teacher RUN (a finished booster run)"
                )
            teacher = load_trained_model(args.teacher)
        data = prepare_data(args.data, cfg, max_rows=args.max_rows)
        result = train(cfg, data, args.out, options, teacher=teacher, dist=dist)
    except (
        ConfigError,
        SchemaError,
        TrainingError,
        CheckpointError,
        DistributedError,
        ValueError,
    ) as exc:
        print(f"rocketrank train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nrocketrank train: interrupted; continue with --resume (checkpoint in {args.out})",
            file=sys.stderr,
        )
        return 130
    finally:
        dist.close()
    if not dist.is_main:
        return 0
    m = result.metrics
    print(
        f"{m['variant']} on {m['split']}: light AUC {m['light']['auc']:.4f} "
        f"logloss {m['light']['logloss']:.4f} | booster AUC {m['booster']['auc']:.4f} | "
        f"{m['steps']} steps in {m['train_seconds']:.1f} s "
        f"({m['samples_per_second']:,.0f} rows/s)"
    )
    print(f"run written to {args.out}: " + json.dumps(sorted(p.name for p in args.out.iterdir())))
    return 0

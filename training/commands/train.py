"""``rocketrank train``: jointly train booster and light net on a data directory.

Any value of the run config can be changed for one run with ``--set
section.key=value`` (repeatable; validated like the file, so an unknown key is an
error). Torch uses the machine's cores divided among the ``--nproc`` processes
unless ``--threads`` says otherwise.

Examples::

    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine
    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine --resume
    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine --nproc 2
    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine_pfd \\
        --set distill.variant=pfd --set optim.lr_dense=0.002 --set 'model.light_dims=[64,32]'

Writes ``RUN/metrics.json``, ``RUN/model.pt``, ``RUN/curves.png`` and the rest of
the run directory described in ``training/loop/run_files.py``; TensorBoard event
files in ``RUN/tensorboard/`` unless ``--no-tensorboard``, and an MLflow run with
``--mlflow URI`` (``training/loop/tracking.py``)::

    rocketrank train --config configs/fine_ctr.yaml --data data/ --out runs/fine \\
        --mlflow sqlite:///mlflow.db
    tensorboard --logdir runs/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from training.commands.overrides import add_set_argument, load_config_with_overrides
from training.commands.tracking_args import add_tracking_arguments, tracking_from_args
from training.config.errors import ConfigError
from training.data.prepare import prepare_data
from training.data.schema import SchemaError
from training.distill.rules import Variant
from training.loop.build import load_trained_model
from training.loop.checkpoint import CheckpointError
from training.loop.distributed import SINGLE_PROCESS, init_from_env
from training.loop.errors import DistributedError, TrainingError
from training.loop.options import TrainOptions
from training.loop.trainer import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, type=Path, metavar="FILE", help="run config YAML"
    )
    add_set_argument(parser)
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="data directory (with schema)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run directory (created)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    parser.add_argument(
        "--epochs", type=int, default=None, metavar="N", help="override optim.epochs"
    )
    parser.add_argument(
        "--max-rows", type=int, default=None, metavar="N", help="use at most N rows of each split"
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
        default=None,
        help="torch threads per process (default: the cores available to this process "
        "divided by --nproc; on a machine shared with other jobs 1 is often fastest)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine, launched with torchrun (gloo on CPU); "
        "see docs/SCALING.md",
    )
    add_tracking_arguments(parser)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` without one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(nproc: int) -> int:
    """Torch threads per process when ``--threads`` is not given: cores ÷ processes."""
    return max(1, available_cores() // max(1, nproc))


def _launch(nproc: int, args: argparse.Namespace) -> int:
    """Run under torchrun; overrides are resolved once into a config file the workers read."""
    from training.loop.launch import launch

    try:
        cfg = load_config_with_overrides(args.config, args.set)
    except ConfigError as exc:
        print(f"rocketrank train: {exc}", file=sys.stderr)
        return 2
    if not args.set:
        return launch(nproc, args, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="rocketrank-train-") as tmp:
        resolved = Path(tmp) / args.config.name
        resolved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        forwarded = argparse.Namespace(**{**vars(args), "config": resolved, "set": None})
        return launch(nproc, forwarded, threads=args.threads)


def run(args: argparse.Namespace) -> int:
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        print(f"rocketrank train: --nproc must be >= 1, got {nproc}", file=sys.stderr)
        return 2
    if args.threads is None:
        args.threads = default_threads(nproc)
    if args.threads < 1:
        print(f"rocketrank train: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(nproc, args)
    dist = SINGLE_PROCESS
    try:
        # under torchrun: join the process group (an ordinary run otherwise)
        dist = init_from_env()
        cfg = load_config_with_overrides(args.config, getattr(args, "set", None))
        options = TrainOptions(
            epochs=args.epochs,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            early_stopping_metric=args.early_stopping_metric,
            progress=not args.no_progress,
            threads=args.threads,
            tracking=tracking_from_args(args),
        )
        teacher = None
        if Variant(cfg.distill.variant) is Variant.TWO_STAGE_KD:
            if args.teacher is None:
                raise TrainingError(
                    "distill.variant two_stage_kd needs --teacher RUN (a finished booster run)"
                )
            teacher = load_trained_model(args.teacher)
        data = prepare_data(args.data, cfg, max_rows=args.max_rows, dist=dist)
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

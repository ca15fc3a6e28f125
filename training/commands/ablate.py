"""``rocketrank ablate``: train every distillation variant over seeds and write the report.

Example::

    rocketrank ablate --config configs/fine_ctr.yaml --data data/ --out runs/fine_ablation
    rocketrank ablate --config configs/coarse_ctr.yaml --data data/ --out runs/coarse \\
        --variants light_alone pfd pfd_md --seeds 5
    rocketrank ablate --config configs/coarse_ctr.yaml --data data/ --out runs/tuned \\
        --tune 20 --seeds 5 --variant-config variants.yaml

``--seeds N`` trains every variant at seeds ``seed .. seed+N-1`` (model init and
data order; the data fixed) and reports each variant's light AUC as mean ± 95%
interval and its paired difference to light_alone with a bootstrap interval
over test requests. ``--tune BUDGET`` first gives every variant BUDGET trials
over its own knobs, chosen on the validation split. ``--variant-config FILE``
sets any config key per variant (``variant: {section: {key: value}}``).

Writes ``DIR/report.json``, ``DIR/report.md``, ``DIR/report.png`` and
``DIR/<variant>/seed<s>/`` per run; prints the Markdown report. Every run writes
TensorBoard event files and ``DIR/tensorboard/`` gets the table (unless
``--no-tensorboard``); ``--mlflow URI`` nests every run under one MLflow run of
the ablation (``training/ablate/tracking.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.ablate.auc import StatsError
from training.ablate.run import run_ablation
from training.ablate.tracking import AblationTracker
from training.ablate.tune import sampler_message
from training.ablate.variants import VARIANTS, load_variant_overrides
from training.commands.overrides import add_set_argument, load_config_with_overrides
from training.commands.tracking_args import add_tracking_arguments, tracking_from_args
from training.config.errors import ConfigError
from training.data.prepare import prepare_data
from training.data.schema import SchemaError
from training.loop.checkpoint import CheckpointError
from training.loop.errors import TrainingError
from training.loop.options import TrainOptions


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="base run config YAML")
    add_set_argument(parser)
    parser.add_argument("--data", required=True, type=Path, help="data directory (with schema)")
    parser.add_argument("--out", required=True, type=Path, help="report directory (created)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=[v.value for v in VARIANTS],
        default=None,
        help="variants to train (default: every one that applies)",
    )
    parser.add_argument(
        "--seeds",
        type=_positive,
        default=1,
        help="runs per variant at seeds seed..seed+N-1 (default 1: the interval then covers "
        "test sampling only; use ≥ 3 for a claim)",
    )
    parser.add_argument(
        "--tune",
        type=_positive,
        default=None,
        metavar="BUDGET",
        help="first tune every variant with BUDGET trials on the validation split",
    )
    parser.add_argument(
        "--variant-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML: variant -> {section: {key: value}} overrides, applied to that variant only",
    )
    parser.add_argument(
        "--n-boot", type=_positive, default=1000, help="bootstrap replicates (default 1000)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    parser.add_argument(
        "--max-rows", type=int, default=None, help="use at most N rows of each split"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep runs whose directory has metrics.json from the same config "
        "(a run from another config is refused, naming the differing keys)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, see `train --help`)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_tracking_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config_with_overrides(args.config, args.set)
        overrides = load_variant_overrides(args.variant_config, cfg) if args.variant_config else {}
        tracking = tracking_from_args(args)
        if args.tune:
            print(f"rocketrank ablate: {sampler_message()}", file=sys.stderr)
        data = prepare_data(args.data, cfg, max_rows=args.max_rows)
        settings = {"seeds": args.seeds, "variants": args.variants, "tune": args.tune}
        with AblationTracker(tracking, args.out, cfg, settings) as tracker:
            options = TrainOptions(
                epochs=args.epochs,
                checkpoint_every=0,
                progress=not args.no_progress,
                threads=args.threads,
                tracking=tracker.runs,
            )
            report = run_ablation(
                cfg,
                data,
                args.out,
                options,
                variants=args.variants,
                seeds=args.seeds,
                reuse_finished=args.reuse,
                overrides=overrides,
                tune_budget=args.tune or 0,
                n_boot=args.n_boot,
            )
            tracker.report(report)
    except (
        ConfigError,
        SchemaError,
        TrainingError,
        CheckpointError,
        StatsError,
        ValueError,
    ) as exc:
        print(f"rocketrank ablate: {exc}", file=sys.stderr)
        return 2
    print((args.out / "report.md").read_text())
    print(
        f"report: {args.out / 'report.md'}, {args.out / 'report.json'}, {args.out / 'report.png'}"
    )
    return 0

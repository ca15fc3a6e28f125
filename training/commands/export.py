"""``rocketrank export``: export a run's light net into a model repository."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.contract.manifest import ArtifactError
from models.contract.repository_reader import RepositoryError
from training.export.export import ExportError, ExportOptions, export_run
from training.loop.errors import TrainingError
from training.loop.mlflow_run import log_export


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="trained run directory")
    parser.add_argument("--repo", required=True, type=Path, help="model repository root")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument(
        "--format",
        default=None,
        choices=["export", "torchscript"],
        help="model format: export (torch.export programs, .pt2; the default for fp32) or "
        "torchscript (model.pt, deprecated by torch 2.13; the default and only format for int8)",
    )
    parser.add_argument(
        "--quantize",
        default="none",
        choices=["none", "int8"],
        help="int8: 8-bit embedding rows and Linear weights, one fp16 scale per row",
    )
    parser.add_argument(
        "--items",
        type=Path,
        default=None,
        help="item catalogue for two-tower item vectors (default: <run data>/items.parquet)",
    )
    parser.add_argument("--keep", type=int, default=None, help="keep only the newest N versions")
    parser.add_argument(
        "--no-promote", action="store_true", help="publish without pointing `current` at it"
    )
    parser.add_argument(
        "--int8-min-rows",
        type=int,
        default=0,
        help="with --quantize int8, embedding tables with fewer rows stay fp32 (default: none)",
    )
    parser.add_argument(
        "--no-int8-linears",
        action="store_true",
        help="with --quantize int8, keep Linear weights fp32 (tables only)",
    )
    parser.add_argument(
        "--parity-rows", type=int, default=50_000, help="test rows for the parity check"
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        help="ed25519 private key (PEM) that signs the manifest, kept outside the repository "
        "(default: $ROCKETRANK_SIGNING_KEY; `rocketrank models keygen` makes one)",
    )
    parser.add_argument(
        "--unsigned",
        action="store_true",
        help="publish without a signature when no key is given (the service refuses it "
        "unless ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS=true)",
    )
    parser.add_argument(
        "--mlflow",
        default=None,
        metavar="URI",
        help="log the artifact's manifest to the MLflow run that trained RUN (train --mlflow "
        "URI; a new run otherwise) at this tracking URI",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = ExportOptions(
            format=args.format,
            quantize=args.quantize,
            items=args.items,
            keep=args.keep,
            promote=not args.no_promote,
            parity_rows=args.parity_rows,
            int8_min_rows=args.int8_min_rows,
            int8_linears=not args.no_int8_linears,
            signing_key=args.signing_key,
            unsigned=args.unsigned,
        )
        result = export_run(args.run, args.repo, args.name, options)
    except (ExportError, ArtifactError, RepositoryError) as exc:
        print(f"export failed: {exc}")
        return 1
    if getattr(args, "mlflow", None):
        try:
            log_export(args.mlflow, args.run, result.path)
        except TrainingError as exc:
            print(f"exported to {result.path}, but {exc}", file=sys.stderr)
            return 1
    m = result.manifest
    parity = result.parity
    print(
        f"exported {m.name}/{m.version} ({m.kind}, {m.stage}, format {m.format}, "
        f"quantization {m.quantization}, "
        f"{m.params:,} parameters, {result.size_bytes / 1e6:.2f} MB) -> {result.path}"
    )
    print(
        f"parity on {parity['rows']:,} {parity['source']} rows: max |{parity['space']} diff| "
        f"{parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:g})"
    )
    export = m.metrics.get("export", {})
    if "fp32_model_bytes" in export:
        ratio = export["fp32_model_bytes"] / export["model_bytes"]
        print(
            f"model {export['model_bytes'] / 1e6:.2f} MB vs fp32 "
            f"{export['fp32_model_bytes'] / 1e6:.2f} MB ({ratio:.2f}x smaller)"
        )
    if result.test_auc:
        print("test AUC: " + json.dumps({k: round(v, 6) for k, v in result.test_auc.items()}))
    return 0

"""Benchmark the exported light net: latency per format and quantisation.

    python -m bench.train.export_latency --run RUN --out bench_export.json

For a trained run, builds every candidate serialisation of its light net —
eager PyTorch (the reference), TorchScript scripted, scripted + frozen, frozen +
``optimize_for_inference``, ``torch.export`` (when it exports), and one int8
variant per plan the exporter tries (tables + Linear weights; tables; large
tables only) — checks each against eager on the same rows, and times a forward pass
over 1,000 and 10,000 candidates (median of ``--repeats`` runs after warm-up;
all formats in one process, interleaved round by round so machine noise hits
them alike). For two-tower nets it
also times the serving path: one ``user_vector`` + ``index_select`` of the
candidates' stored item vectors + ``torch.mv``.

Writes JSON: machine facts, one record per (format, candidates) with median /
p10 / p90 milliseconds, the ratio to eager, parity (max |logit diff|), and the
serialised size in bytes. Medians and ratios from one run are comparable; the
absolute numbers depend on the (shared, noisy) machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.common.interleaved import time_interleaved
from training.export.graph import dequantize_rows, prepare_scorer, quantize_rows, to_torchscript
from training.export.int8 import int8_plans
from training.export.parity import random_rows
from training.export.run_loader import load_run

SIZES = (1_000, 10_000)
TWO_TOWER_METHODS = ["user_vector", "item_vector"]
INT8_VARIANTS = ("int8_torchscript", "int8_tables_torchscript", "int8_large_tables_torchscript")
"""Names of the variants built from ``training.export.int8_plans()``, in its order."""


def _size(module: Any) -> int | None:
    buffer = io.BytesIO()
    if isinstance(module, torch.jit.ScriptModule):
        torch.jit.save(module, buffer)
        return len(buffer.getvalue())
    return None


def _export_program(model: torch.nn.Module, rows: dict[str, Tensor]) -> Any:
    """``torch.export`` of the forward with a dynamic batch dimension, round-tripped
    through ``torch.export.save/load``; ``None`` if it does not export."""
    batch = torch.export.Dim("batch", min=2, max=1 << 20)
    shapes = {"features": {k: {0: batch} for k in rows}}
    try:
        program = torch.export.export(model, (dict(rows),), dynamic_shapes=shapes, strict=False)
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        buffer.seek(0)
        return torch.export.load(buffer).module()
    except Exception as exc:  # many graph shapes do not export; report and go on
        warnings.warn(f"torch.export failed: {type(exc).__name__}: {exc}", stacklevel=2)
        return None


def build_variants(scorer: torch.nn.Module, two_tower: bool, rows: dict[str, Tensor]) -> dict:
    methods = TWO_TOWER_METHODS if two_tower else []
    fp32 = prepare_scorer(scorer, "none")
    variants: dict[str, Any] = {
        "eager": scorer.eval(),
        "eager_bn_folded": fp32,
        "torchscript": to_torchscript(fp32, methods, freeze=False),
        "torchscript_frozen": to_torchscript(fp32, methods, freeze=True),
        "torchscript_frozen_optimized": to_torchscript(fp32, methods, optimize=True),
    }
    # one variant per int8 plan the exporter may fall back through, smallest first
    for plan, name in zip(int8_plans(), INT8_VARIANTS, strict=True):
        int8 = prepare_scorer(scorer, "int8", plan.min_rows, linears=plan.linears)
        variants[name] = to_torchscript(int8, methods, freeze=False)
    program = _export_program(fp32, rows)
    if program is not None:
        variants["torch_export"] = program
    return variants


def run_bench(run_dir: Path, repeats: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    run = load_run(run_dir)
    model = run.model.eval()
    encoder = run.encoder.subset(model.served)
    two_tower = bool(model.two_tower)
    rows = random_rows(encoder, list(model.served), max(SIZES), seed=1).features
    scorer = model.light_scorer()
    variants = build_variants(scorer, two_tower, {k: v[:16] for k, v in rows.items()})
    # Sizes before any call: int8 tables fill their fp32 cache on the first one.
    sizes = {name: _size(module) for name, module in variants.items()}
    with torch.inference_mode():
        reference = scorer(rows)

    # Interleaved rounds: every variant is timed once per round, so load from other
    # processes on a shared machine hits all variants alike.
    cases: list[tuple[dict[str, Any], Callable[[], Any]]] = []
    for name, module in variants.items():
        with torch.inference_mode():
            out = module(rows)
        base = {
            "format": name,
            "quantization": "int8" if name.startswith("int8") else "none",
            "max_abs_logit_diff_vs_eager": float((out - reference).abs().max()),
            # the export's int8 tolerance is on probabilities (training/export/export.py)
            "max_abs_probability_diff_vs_eager": float(
                (torch.sigmoid(out) - torch.sigmoid(reference)).abs().max()
            ),
            "size_bytes": sizes[name],
        }
        for n in SIZES:
            batch = {k: v[:n] for k, v in rows.items()}
            cases.append(({**base, "path": "forward", "candidates": n}, partial(module, batch)))
            if two_tower and hasattr(module, "user_vector"):
                step = _serving_step(module, batch, name)
                cases.append(({**base, "path": "serving", "candidates": n}, step))
    results = time_interleaved(cases, repeats, warmup=3)
    eager = {
        (r["path"], r["candidates"]): r["median_ms"] for r in results if r["format"] == "eager"
    }
    for r in results:
        base = eager.get((r["path"], r["candidates"]))
        r["ratio_to_eager"] = r["median_ms"] / base if base else None
    return {
        "run": str(run_dir),
        "kind": "two_tower" if two_tower else "mlp",
        "torch": torch.__version__,
        "threads": threads,
        "repeats": repeats,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m": os.getloadavg()[0],
        },
        "results": results,
    }


def _serving_step(module: Any, batch: dict[str, Tensor], name: str) -> Callable[[], Tensor]:
    """The coarse service's work for one request: one user vector, then the
    candidates' stored item vectors (``index_select``) dotted with it (``mv``)."""
    with torch.inference_mode():
        vectors = module.item_vector(batch)
        if name.startswith("int8"):
            vectors = dequantize_rows(*quantize_rows(vectors))
    pos = torch.randperm(vectors.shape[0])
    user = {k: v[:1] for k, v in batch.items()}

    def step() -> Tensor:
        u = module.user_vector(user)[0]
        return torch.mv(torch.index_select(vectors, 0, pos), u)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="trained run directory")
    parser.add_argument("--out", required=True, type=Path, help="JSON output file")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    report = run_bench(args.run, args.repeats, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'format':<30} {'path':<8} {'cand':>6} {'median ms':>10} {'x eager':>8} {'diff':>9}")
    for r in report["results"]:
        ratio = f"{r['ratio_to_eager']:.2f}" if r["ratio_to_eager"] else "-"
        print(
            f"{r['format']:<30} {r['path']:<8} {r['candidates']:>6} {r['median_ms']:>10.3f} "
            f"{ratio:>8} {r['max_abs_logit_diff_vs_eager']:>9.2e}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

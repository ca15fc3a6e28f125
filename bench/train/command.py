"""``rocketrank bench train``: training throughput, cost and utilisation.

Example::

    rocketrank bench train --config configs/fine_ctr.yaml --data data/ \\
        --steps 60 --runs 3 --out bench/train_fine.json

What is timed: the trainer's own step -- ``training.loop.step_parts.forward_for_loss``
→ ``training.distill.losses.compute_loss`` → backward → gradient clipping → optimiser
steps, with batches from the data layer's shuffled iterator (so input
batching is included) -- for the same number of optimiser steps (``--steps``,
after ``--warmup-steps`` untimed ones) and the config's batch size, per variant:

* ``booster_alone`` and ``light_alone``: one net, its own BCE;
* ``joint``: the config's variant (e.g. ``rocket`` or ``pfd_md``): both nets
  and the hint;
* ``two_stage_kd``: the wall time of *both* stages -- a booster trained alone
  for the same steps, then the student trained on its soft labels (the frozen
  teacher's forward runs each step) for the same steps.

Not timed: data loading/encoding before the first batch, evaluation, checkpoints.

FLOPs per sample follow the convention training ≈ 3 × forward matmul FLOPs
(forward, plus two matmuls of the same size in backward); forward FLOPs are
counted by ``torch.utils.flop_counter`` on the real nets (embedding lookups and
element-wise work count 0). The fwd+bwd FLOPs of one joint step are also
counted directly as a check of the convention. MFU = achieved FLOP/s ÷ the
machine's measured ``torch.mm`` rate (fp32, 1024×1024×1024, median of
``--matmul-repeats``, same thread count).

Ratios are computed within each run (same machine state) and then the median
over runs is reported.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import torch

from bench.common.machine import machine_info
from bench.train.run import run_train_bench
from training.config.errors import ConfigError
from training.config.run import load_config
from training.data.prepare import prepare_data
from training.loop.errors import TrainingError

# ----------------------------------------------------------------------------- machine


def format_table(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"bench train  {doc['config_path']}  batch {doc['batch_size']}  {doc['steps']} steps × "
        f"{doc['runs']} runs  ({m['cpu_model']}, {m['cores']} cores, torch {m['torch']}, "
        f"{doc['torch_threads']} threads)",
        f"matmul {doc['matmul_gflops']:.1f} GFLOP/s (1024³ fp32)"
        + (
            f", {doc['matmul_gflops_model_shape']:.1f} GFLOP/s at model shape "
            f"{'×'.join(map(str, doc['model_shape']))}"
            if doc["matmul_gflops_model_shape"]
            else ""
        ),
        f"{'variant':22} {'samples/s':>11} {'s/run':>7} {'kFLOP/sample':>13} {'GFLOP/s':>8} "
        f"{'MFU':>6}",
    ]
    for name, v in doc["variants"].items():
        label = f"joint ({v['variant']})" if name == "joint" else name
        lines.append(
            f"{label:22} {v['samples_per_s']:>11,.0f} {v['seconds']:>7.2f} "
            f"{v['train_flops_per_sample'] / 1e3:>13,.1f} {v['achieved_gflops']:>8.2f} "
            f"{v['mfu']:>6.1%}"
        )
    g = doc["goals"]
    lines.append(
        f"joint/booster_alone {doc['joint_over_booster_alone']:.2f} (goal ≤ "
        f"{g['joint_over_booster_alone_max']})   joint/two_stage {doc['joint_over_two_stage']:.2f}"
        f" (goal ≤ {g['joint_over_two_stage_max']})   MFU {doc['mfu']:.1%} (goal ≥ "
        f"{g['mfu_min']:.0%})"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML")
    parser.add_argument("--data", type=Path, required=True, help="data directory")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--steps", type=int, default=50, help="timed optimiser steps (50)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (5)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians reported (3)")
    parser.add_argument("--max-rows", type=int, help="use at most N rows of each split")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1, like rocketrank train: on shared cores a second "
        "thread's OpenMP barriers cost more than it computes)",
    )
    parser.add_argument(
        "--matmul-repeats", type=int, default=30, help="timed repeats of each matmul rate (30)"
    )


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.runs < 1 or args.warmup_steps < 0:
        print("rocketrank bench train: need --steps >= 1, --runs >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads if args.threads > 0 else os.cpu_count() or 1)
    started = time.time()
    machine = machine_info()
    try:
        cfg = load_config(args.config)
        print(f"preparing {args.data} for task {cfg.task!r} ...", flush=True)
        data = prepare_data(args.data, cfg, max_rows=args.max_rows)
        doc = run_train_bench(
            cfg,
            data,
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            runs=args.runs,
            matmul_repeats=args.matmul_repeats,
            log=lambda line: print(line, flush=True),
        )
    except (ConfigError, TrainingError, FileNotFoundError, ValueError) as exc:
        print(f"rocketrank bench train: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:]
    if argv[:2] == ["bench", "train"]:
        argv = argv[2:]
    doc = {
        "benchmark": "train",
        "machine": machine,
        "command": "rocketrank bench train " + shlex.join(argv),
        "config_path": str(args.config),
        "task": cfg.task,
        "stage": cfg.stage,
        **doc,
        "seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(format_table(doc))
    print(f"wrote {args.out}")
    return 0

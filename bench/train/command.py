"""``rocketrank bench train``: training throughput, cost and utilisation.

Example::

    rocketrank bench train --config configs/fine_ctr.yaml --data data/ \\
        --steps 60 --runs 3 --out bench/train_fine.json

What is timed: the trainer's own step -- ``training.loop.trainer.forward_for_loss``
→ ``training.distill.compute_loss`` → backward → gradient clipping → optimiser
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
import itertools
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.cost import count_flops
from models.joint import JointModel
from models.provenance import git_commit
from training.ablate.variants import with_variant
from training.config import ConfigError, RunConfig, load_config
from training.data.prepare import PreparedData, prepare_data
from training.distill import Variant, compute_loss
from training.loop.build import build_model, build_optimizers, seed_everything
from training.loop.trainer import TrainingError, forward_for_loss

SINGLE_NET = (Variant.BOOSTER_ALONE, Variant.LIGHT_ALONE, Variant.TWO_STAGE_KD)
GOAL_JOINT_OVER_BOOSTER = 1.2
GOAL_JOINT_OVER_TWO_STAGE = 0.6
GOAL_MFU = 0.5


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "git_commit": git_commit(mark_dirty=True),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": load,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def matmul_gflops(m: int, k: int, n: int, repeats: int = 30, warmup: int = 3) -> float:
    """Median GFLOP/s of ``torch.mm`` of ``[m, k] @ [k, n]`` fp32 (``2·m·k·n`` FLOPs per call)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen)
    b = torch.randn(k, n, generator=gen)
    out = torch.empty(m, n)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t)
    return 2.0 * m * k * n / statistics.median(times) / 1e9


def largest_linear(module: torch.nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of the biggest ``nn.Linear`` in ``module``."""
    best = None
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            shape = (sub.in_features, sub.out_features)
            if best is None or shape[0] * shape[1] > best[0] * best[1]:
                best = shape
    return best


# ----------------------------------------------------------------------------- timing


def _batches(data: PreparedData, batch_size: int, seed: int) -> Iterator[Any]:
    for epoch in itertools.count():
        yield from data.train.iter_batches(batch_size, shuffle=True, seed=seed, epoch=epoch)


def time_variant(
    cfg: RunConfig,
    data: PreparedData,
    steps: int,
    warmup_steps: int,
    teacher: JointModel | None = None,
) -> tuple[dict[str, float], JointModel]:
    """Train ``cfg``'s variant for ``warmup_steps + steps`` steps; time the last ``steps``.

    Returns:
        ``({"seconds", "samples", "samples_per_s"}, model)``.
    """
    seed_everything(cfg.seed)
    model, _ = build_model(cfg, data)
    model.train()
    optimizers = build_optimizers(model, cfg)
    dense = [p for _, p in model.dense_parameters() if p.requires_grad]
    variant = Variant(cfg.distill.variant)
    total = warmup_steps + steps
    settings = cfg.distill.settings(total, data.train.num_batches(cfg.data.batch_size))
    label = data.label
    batches = _batches(data, cfg.data.batch_size, cfg.seed)
    samples = 0
    start = time.perf_counter()
    for step in range(total):
        if step == warmup_steps:
            samples = 0
            start = time.perf_counter()
        batch = next(batches)
        out = forward_for_loss(model, batch.features, variant, teacher)
        terms = compute_loss(out, batch.labels[label], settings, step, batch.group)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        terms.total.backward()
        if cfg.optim.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(dense, cfg.optim.max_grad_norm)
        for opt in optimizers.values():
            opt.step()
        samples += len(batch)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": samples, "samples_per_s": samples / seconds}, model


def joint_variant(cfg: RunConfig) -> Variant:
    """The variant timed as "joint": the config's, or Rocket when it names a baseline."""
    variant = Variant(cfg.distill.variant)
    return Variant.ROCKET if variant in SINGLE_NET else variant


def forward_flops(model: JointModel, data: PreparedData, rows: int = 256) -> dict[str, float]:
    """Forward matmul FLOPs per sample of the booster and of the light net (training path)."""
    batch = next(data.train.iter_batches(min(rows, len(data.train)), shuffle=False))
    feats = dict(batch.features)
    n = len(batch)
    model.eval()
    try:
        booster = count_flops(lambda f: model.forward_joint(f, True, False), feats) / n
        light = count_flops(lambda f: model.forward_joint(f, False, True), feats) / n
    finally:
        model.train()
    return {"booster": booster, "light": light}


def measured_step_flops(cfg: RunConfig, data: PreparedData, rows: int = 256) -> float:
    """FLOPs per sample of one real joint training step (forward + loss + backward), counted."""
    seed_everything(cfg.seed)
    model, _ = build_model(cfg, data)
    model.train()
    batch = next(data.train.iter_batches(min(rows, len(data.train)), shuffle=False))
    settings = cfg.distill.settings(1, data.train.num_batches(cfg.data.batch_size))
    counter = FlopCounterMode(display=False)
    with counter:
        out = forward_for_loss(model, batch.features, Variant(cfg.distill.variant), None)
        terms = compute_loss(out, batch.labels[data.label], settings, 0, batch.group)
        terms.total.backward()
    return counter.get_total_flops() / len(batch)


# ----------------------------------------------------------------------------- the benchmark


def run_train_bench(
    cfg: RunConfig,
    data: PreparedData,
    *,
    steps: int,
    warmup_steps: int,
    runs: int,
    matmul_repeats: int,
    log: Any = print,
) -> dict[str, Any]:
    """Time every variant ``runs`` times; FLOPs, matmul rate, MFU and ratios."""
    joint = joint_variant(cfg)
    configs = {
        "booster_alone": with_variant(cfg, Variant.BOOSTER_ALONE),
        "light_alone": with_variant(cfg, Variant.LIGHT_ALONE),
        "joint": with_variant(cfg, joint),
        "two_stage_kd_student": with_variant(cfg, Variant.TWO_STAGE_KD),
    }
    per_run: list[dict[str, dict[str, float]]] = []
    for r in range(runs):
        timings: dict[str, dict[str, float]] = {}
        timings["booster_alone"], teacher = time_variant(
            configs["booster_alone"], data, steps, warmup_steps
        )
        teacher.eval()
        teacher.requires_grad_(False)
        timings["light_alone"], _ = time_variant(configs["light_alone"], data, steps, warmup_steps)
        timings["joint"], _ = time_variant(configs["joint"], data, steps, warmup_steps)
        timings["two_stage_kd_student"], _ = time_variant(
            configs["two_stage_kd_student"], data, steps, warmup_steps, teacher=teacher
        )
        both = timings["booster_alone"]["seconds"] + timings["two_stage_kd_student"]["seconds"]
        timings["two_stage_kd"] = {
            "seconds": both,
            "samples": timings["booster_alone"]["samples"],
            "samples_per_s": timings["booster_alone"]["samples"] / both,
        }
        timings["ratios"] = {
            "joint_over_booster_alone": timings["joint"]["seconds"]
            / timings["booster_alone"]["seconds"],
            "joint_over_two_stage": timings["joint"]["seconds"] / both,
        }
        per_run.append(timings)
        log(
            f"run {r + 1}/{runs}: "
            + "  ".join(
                f"{k} {v['samples_per_s']:,.0f}/s" for k, v in timings.items() if k != "ratios"
            )
        )

    # FLOPs: forward per net, the 3× convention per variant, and a counted joint step.
    seed_everything(cfg.seed)
    probe, _ = build_model(configs["joint"], data)
    fwd = forward_flops(probe, data)
    f_b, f_l = fwd["booster"], fwd["light"]
    train_flops = {
        "booster_alone": 3 * f_b,
        "light_alone": 3 * f_l,
        "joint": 3 * (f_b + f_l),
        "two_stage_kd_student": 3 * f_l + f_b,
        # per sample, both stages: booster training + student training with a teacher forward
        "two_stage_kd": 3 * f_b + 3 * f_l + f_b,
    }
    counted = measured_step_flops(configs["joint"], data)

    threads = torch.get_num_threads()
    square = matmul_gflops(1024, 1024, 1024, repeats=matmul_repeats)
    shape = largest_linear(probe.booster)
    model_shape = (
        matmul_gflops(cfg.data.batch_size, shape[0], shape[1], repeats=matmul_repeats)
        if shape
        else None
    )

    variants: dict[str, Any] = {}
    for name in ("booster_alone", "light_alone", "joint", "two_stage_kd_student", "two_stage_kd"):
        sps = statistics.median(t[name]["samples_per_s"] for t in per_run)
        secs = statistics.median(t[name]["seconds"] for t in per_run)
        achieved = sps * train_flops[name] / 1e9
        variants[name] = {
            "samples_per_s": sps,
            "seconds": secs,
            "train_flops_per_sample": train_flops[name],
            "achieved_gflops": achieved,
            "mfu": achieved / square,
            "runs": [t[name] for t in per_run],
        }
    variants["joint"]["variant"] = joint.value
    ratios = {
        key: statistics.median(t["ratios"][key] for t in per_run)
        for key in ("joint_over_booster_alone", "joint_over_two_stage")
    }
    return {
        "steps": steps,
        "warmup_steps": warmup_steps,
        "runs": runs,
        "batch_size": cfg.data.batch_size,
        "torch_threads": threads,
        "matmul_gflops": square,
        "matmul_shape": [1024, 1024, 1024],
        "matmul_gflops_model_shape": model_shape,
        "model_shape": [cfg.data.batch_size, *shape] if shape else None,
        "flops": {
            "forward_per_sample": {"booster": f_b, "light": f_l},
            "convention": "train FLOPs = 3 × forward matmul FLOPs (fwd + 2 bwd matmuls); "
            "two-stage student adds 1 × teacher forward; embedding lookups count 0",
            "joint_step_counted_per_sample": counted,
            "joint_step_convention_per_sample": train_flops["joint"],
        },
        "variants": variants,
        "mfu": variants["joint"]["mfu"],
        **ratios,
        "goals": {
            "joint_over_booster_alone_max": GOAL_JOINT_OVER_BOOSTER,
            "joint_over_two_stage_max": GOAL_JOINT_OVER_TWO_STAGE,
            "mfu_min": GOAL_MFU,
            "met": {
                "joint_over_booster_alone": ratios["joint_over_booster_alone"]
                <= GOAL_JOINT_OVER_BOOSTER,
                "joint_over_two_stage": ratios["joint_over_two_stage"] <= GOAL_JOINT_OVER_TWO_STAGE,
                "mfu": variants["joint"]["mfu"] >= GOAL_MFU,
            },
        },
    }


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
    parser.add_argument("--matmul-repeats", type=int, default=30)


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

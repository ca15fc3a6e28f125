"""The training benchmark itself: time each variant's steps, count FLOPs, measure matmul.

``rocketrank bench train`` (``bench/train/command.py``) calls :func:`run_train_bench`
and writes its result; what is timed and how FLOPs are counted is described there.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.cost import count_flops
from models.joint import JointModel
from training.ablate.variants import with_variant
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.losses import compute_loss
from training.distill.rules import Variant
from training.loop.build import build_model, build_optimizers, seed_everything
from training.loop.step_parts import forward_for_loss

SINGLE_NET = (Variant.BOOSTER_ALONE, Variant.LIGHT_ALONE, Variant.TWO_STAGE_KD)
GOAL_JOINT_OVER_BOOSTER = 1.2
GOAL_JOINT_OVER_TWO_STAGE = 0.6
GOAL_MFU = 0.5


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


def _variant_configs(cfg: RunConfig) -> dict[str, RunConfig]:
    """The four timed runs: each single net, the config's joint variant, the KD student."""
    return {
        "booster_alone": with_variant(cfg, Variant.BOOSTER_ALONE),
        "light_alone": with_variant(cfg, Variant.LIGHT_ALONE),
        "joint": with_variant(cfg, joint_variant(cfg)),
        "two_stage_kd_student": with_variant(cfg, Variant.TWO_STAGE_KD),
    }


def _time_once(
    configs: dict[str, RunConfig], data: PreparedData, steps: int, warmup_steps: int
) -> dict[str, dict[str, float]]:
    """One run of every variant; ratios within the run (same machine state)."""
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
    return timings


def _train_flops(f_b: float, f_l: float) -> dict[str, float]:
    """Training FLOPs per sample by the 3× convention, from forward FLOPs per net."""
    return {
        "booster_alone": 3 * f_b,
        "light_alone": 3 * f_l,
        "joint": 3 * (f_b + f_l),
        "two_stage_kd_student": 3 * f_l + f_b,
        # per sample, both stages: booster training + student training with a teacher forward
        "two_stage_kd": 3 * f_b + 3 * f_l + f_b,
    }


def _variant_summary(
    per_run: list[dict[str, dict[str, float]]], train_flops: dict[str, float], square: float
) -> dict[str, Any]:
    """Medians over runs per variant, with achieved GFLOP/s and MFU."""
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
    return variants


def _goals(ratios: dict[str, float], mfu: float) -> dict[str, Any]:
    return {
        "joint_over_booster_alone_max": GOAL_JOINT_OVER_BOOSTER,
        "joint_over_two_stage_max": GOAL_JOINT_OVER_TWO_STAGE,
        "mfu_min": GOAL_MFU,
        "met": {
            "joint_over_booster_alone": ratios["joint_over_booster_alone"]
            <= GOAL_JOINT_OVER_BOOSTER,
            "joint_over_two_stage": ratios["joint_over_two_stage"] <= GOAL_JOINT_OVER_TWO_STAGE,
            "mfu": mfu >= GOAL_MFU,
        },
    }


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
    configs = _variant_configs(cfg)
    per_run: list[dict[str, dict[str, float]]] = []
    for r in range(runs):
        timings = _time_once(configs, data, steps, warmup_steps)
        per_run.append(timings)
        rates = "  ".join(
            f"{k} {v['samples_per_s']:,.0f}/s" for k, v in timings.items() if k != "ratios"
        )
        log(f"run {r + 1}/{runs}: {rates}")

    # FLOPs: forward per net, the 3× convention per variant, and a counted joint step.
    seed_everything(cfg.seed)
    probe, _ = build_model(configs["joint"], data)
    fwd = forward_flops(probe, data)
    f_b, f_l = fwd["booster"], fwd["light"]
    train_flops = _train_flops(f_b, f_l)
    counted = measured_step_flops(configs["joint"], data)

    square = matmul_gflops(1024, 1024, 1024, repeats=matmul_repeats)
    shape = largest_linear(probe.booster)
    model_shape = (
        matmul_gflops(cfg.data.batch_size, shape[0], shape[1], repeats=matmul_repeats)
        if shape
        else None
    )
    variants = _variant_summary(per_run, train_flops, square)
    variants["joint"]["variant"] = joint_variant(cfg).value
    ratios = {
        key: statistics.median(t["ratios"][key] for t in per_run)
        for key in ("joint_over_booster_alone", "joint_over_two_stage")
    }
    return {
        "steps": steps,
        "warmup_steps": warmup_steps,
        "runs": runs,
        "batch_size": cfg.data.batch_size,
        "torch_threads": torch.get_num_threads(),
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
        "goals": _goals(ratios, variants["joint"]["mfu"]),
    }


__all__ = [
    "forward_flops",
    "joint_variant",
    "largest_linear",
    "matmul_gflops",
    "measured_step_flops",
    "run_train_bench",
    "time_variant",
]

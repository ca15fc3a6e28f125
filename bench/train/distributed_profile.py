"""Where a data-parallel step's time goes: forward+backward vs gradient sync, per rank.

Run under torchrun (the figures of ``docs/SCALING.md``)::

    torchrun --nproc-per-node 2 -m bench.train.distributed_profile \\
        --config configs/fine_ctr.yaml --data data/ --steps 20

Each rank trains its slice of the first ``--steps`` global batches of epoch 0
(no optimiser step: the model stays at initialisation, which does not change
the cost) and times ``forward + compute_loss + backward`` and
``DistContext.sync_step`` separately, in wall and process-CPU milliseconds. The
first two steps are warm-up and not counted. Rank 0 prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.config.run import load_config
from training.data.prepare import prepare_data
from training.distill.losses import compute_loss
from training.distill.rules import Variant
from training.loop.build import build_model
from training.loop.distributed import init_from_env
from training.loop.step_parts import forward_for_loss

WARMUP_STEPS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train.distributed_profile", description=__doc__
    )
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=20, help="global batches timed (+2 warm-up)")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error("--steps must be > 0")

    torch.set_num_threads(1)
    dist = init_from_env()
    try:
        cfg = load_config(args.config)
        dist.check_config(cfg)
        data = prepare_data(args.data, cfg)
        torch.manual_seed(cfg.seed)
        model, _ = build_model(cfg, data)
        model.train()
        settings = cfg.distill.settings(
            args.steps + WARMUP_STEPS, data.train.num_batches(cfg.data.batch_size)
        )
        variant = Variant(cfg.distill.variant)
        batches = dist.shard_batches(
            data.train.iter_batches(cfg.data.batch_size, shuffle=True, seed=cfg.seed, epoch=0)
        )
        totals = {"fwd_bwd_ms": 0.0, "fwd_bwd_cpu_ms": 0.0, "sync_ms": 0.0, "sync_cpu_ms": 0.0}
        timed = 0
        for step, batch in enumerate(batches):
            if step >= args.steps + WARMUP_STEPS:
                break
            wall, cpu = time.perf_counter(), time.process_time()
            out = forward_for_loss(model, batch.features, variant, None)
            terms = compute_loss(out, batch.labels[data.label], settings, step, batch.group)
            model.zero_grad(set_to_none=True)
            terms.total.backward()
            wall_mid, cpu_mid = time.perf_counter(), time.process_time()
            dist.sync_step(model, terms, len(batch))
            wall_end, cpu_end = time.perf_counter(), time.process_time()
            if step >= WARMUP_STEPS:
                timed += 1
                totals["fwd_bwd_ms"] += 1e3 * (wall_mid - wall)
                totals["fwd_bwd_cpu_ms"] += 1e3 * (cpu_mid - cpu)
                totals["sync_ms"] += 1e3 * (wall_end - wall_mid)
                totals["sync_cpu_ms"] += 1e3 * (cpu_end - cpu_mid)
        if dist.is_main:
            record = {
                "world_size": dist.world_size,
                "global_batch": cfg.data.batch_size,
                "sparse_tables": cfg.model.sparse,
                "steps": timed,
            } | {k: round(v / max(timed, 1), 2) for k, v in totals.items()}
            print(json.dumps(record))
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

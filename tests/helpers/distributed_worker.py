"""A torchrun worker for the distributed tests: ``train`` with options the CLI does not expose.

Usage (under torchrun)::

    python -m torch.distributed.run --nproc-per-node 2 -m tests.helpers.distributed_worker SPEC.json

SPEC: ``{"config": yaml path, "data": dir, "out": run dir, "epochs": int,
"stop_after_steps": int | null, "resume": bool}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.config.run import load_config
from training.data.prepare import prepare_data
from training.loop.distributed import init_from_env
from training.loop.options import TrainOptions
from training.loop.trainer import train


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    dist = init_from_env()
    try:
        cfg = load_config(spec["config"])
        data = prepare_data(spec["data"], cfg)
        options = TrainOptions(
            epochs=spec["epochs"],
            resume=spec.get("resume", False),
            stop_after_steps=spec.get("stop_after_steps"),
            checkpoint_every=0,
            progress=False,
            threads=1,
        )
        result = train(cfg, data, spec["out"], options, dist=dist)
        if dist.is_main:
            print(json.dumps({"interrupted": result.interrupted, **result.position.to_dict()}))
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

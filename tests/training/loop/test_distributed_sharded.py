"""``data.shard_by_rank`` under torchrun: each rank reads only its own chunks.

Two real gloo processes run ``rocketrank train`` (the CLI's own code path)
through :mod:`tests.helpers.sharded_worker`, which counts what each rank asked
the data layer for: the rows read per split and phase, and the training
chunks encoded. The chunk plan is a function of ``(seed, epoch)``, so the
test knows which chunks belong to which rank.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.helpers.distributed import run_torchrun
from tests.helpers.trainer import tiny_config, write_tiny_data
from training.config.errors import ConfigError
from training.config.run import RunConfig
from training.data.prepare import prepare_data
from training.data.shuffle import chunk_plan
from training.data.source import SplitSource
from training.loop.options import TrainOptions
from training.loop.trainer import train

EPOCHS = 2
CHUNK = 500
BATCH = 255
WORLD = 2
# measured: sharded 0.598 / 0.778 (light / booster), one process 0.602 / 0.773
AUC_TOL = 0.05


def test_shard_by_rank_needs_a_streamed_split() -> None:
    with pytest.raises(ConfigError, match="shard_by_rank"):
        RunConfig.from_dict({"task": "ctr", "stage": "fine", "data": {"shard_by_rank": True}})


@pytest.mark.slow
def test_each_rank_reads_only_its_own_chunks(tmp_path: Path) -> None:
    data_dir = write_tiny_data(tmp_path / "data", rows=6000)
    cfg = tiny_config(
        "rocket",
        epochs=EPOCHS,
        batch_size=BATCH,
        data={"chunk_rows": CHUNK, "shard_by_rank": True},
        optim={"early_stopping_patience": 0},
    )
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    out, prefix = tmp_path / "run", tmp_path / "reads"
    argv = ["train", "--config", str(cfg_path), "--data", str(data_dir), "--out", str(out)]
    proc = run_torchrun(
        WORLD, ["-m", "tests.helpers.sharded_worker", str(prefix), *argv, "--no-progress"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1  # rank 0 alone reports (and writes)
    reads = [json.loads(Path(f"{prefix}.{r}.json").read_text()) for r in range(WORLD)]
    assert [r["exit"] for r in reads] == [0] * WORLD

    train_rows = SplitSource(data_dir / "train.parquet").num_rows
    n_chunks = math.ceil(train_rows / CHUNK)
    assert n_chunks >= 4 * WORLD  # enough chunks that a share is a real share

    # rank 0 alone validates the log and fits the encoder; the others read nothing then
    assert reads[0]["rows"]["prepare"]["train"] == train_rows
    for other in reads[1:]:
        assert sum(other["rows"].get("prepare", {}).values()) == 0

    # training: each rank encoded exactly the chunks at its plan positions, epoch by epoch
    for rank, got in enumerate(reads):
        mine = [
            chunk
            for epoch in range(EPOCHS)
            for position, (chunk, _) in enumerate(chunk_plan(train_rows, CHUNK, cfg.seed, epoch))
            if position % WORLD == rank
        ]
        assert got["chunks"]["train"] == mine
        # ...and read from Parquet at most those chunks' rows (later epochs hit the chunk cache)
        first_epoch = [
            c
            for p, (c, _) in enumerate(chunk_plan(train_rows, CHUNK, cfg.seed, 0))
            if p % WORLD == rank
        ]
        own_rows = sum(min(CHUNK, train_rows - c * CHUNK) for c in first_epoch)
        assert own_rows <= got["rows"]["train"]["train"] <= own_rows * EPOCHS
        assert got["rows"]["train"]["train"] < train_rows
    # together the ranks encoded every chunk once per epoch
    assert sorted(c for got in reads for c in got["chunks"]["train"]) == sorted(
        list(range(n_chunks)) * EPOCHS
    )

    # the run finishes with sane metrics, trained on every row once per epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_rows"] == train_rows
    assert metrics["steps"] == EPOCHS * math.ceil(train_rows / BATCH)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    terms = [s["loss"] for s in steps if s["kind"] == "step"]
    assert len(terms) == metrics["steps"]
    assert all(math.isfinite(v) for t in terms for v in t.values())
    # both nets learnt (the total also holds the hint, which rises and falls here)
    for term in ("booster_bce", "light_bce"):
        assert sum(t[term] for t in terms[-10:]) < sum(t[term] for t in terms[:10]), term
    # statistically the one-process run: same data, config and seed, other batches
    ref = train(
        cfg,
        prepare_data(data_dir, cfg),
        tmp_path / "single",
        TrainOptions(progress=False, threads=1, checkpoint_every=0),
    )
    for net in ("light", "booster"):
        assert math.isfinite(metrics[net]["logloss"])
        assert metrics[net]["auc"] == pytest.approx(ref.metrics[net]["auc"], abs=AUC_TOL), net

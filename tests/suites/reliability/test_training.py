"""``rocketrank train`` killed with SIGKILL mid-epoch, then ``--resume``d: the run
ends exactly where an uninterrupted one does (parameters, step losses, metrics).

``tests/training/loop/test_trainer.py`` proves the same in-process with a deliberate, clean
stop after a checkpoint; here the process dies at an arbitrary point between
checkpoints (possibly while writing ``metrics.jsonl``), as a preempted job would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.repo import ROOT
from tests.helpers.trainer import tiny_config, write_tiny_data

pytestmark = pytest.mark.slow

# Wall-clock fields differ between any two runs; everything else must match.
TIMING_KEYS = {"train_seconds", "train_cpu_seconds", "samples_per_second"}


def train_cmd(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "rocketrank", "train", "--config", str(config),
        "--data", str(data), "--out", str(out), "--checkpoint-every", "5",
        "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def step_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "step"]


def logged_steps(run_dir: Path) -> int:
    """Complete step records in ``metrics.jsonl`` so far (the last line may be cut)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    return sum('"kind": "step"' in line for line in text.splitlines()[:-1])


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = write_tiny_data(tmp_path / "data", rows=2_500)
    config = tmp_path / "run.yaml"
    # dropout: the result depends on the restored RNG state, not only on the weights
    cfg = tiny_config("rocket", epochs=1, batch_size=32, model={"dropout": 0.2})
    config.write_text(yaml.safe_dump(cfg.to_dict()))

    full = tmp_path / "full"
    run(train_cmd(config, data, full))

    part = tmp_path / "part"
    proc = subprocess.Popen(
        train_cmd(config, data, part), cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # The step log is flushed at each checkpoint (every 5 steps): once the second one
        # shows, the job is somewhere past step 10, and its buffered records die with it.
        while logged_steps(part) < 10:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(part / "checkpoint.pt", map_location="cpu", weights_only=True)
    position = ckpt["position"]
    assert position["epoch"] == 0 and position["batch"] > 0, f"not mid-epoch: {position}"
    assert not (part / "metrics.json").exists() and not (part / "model.pt").exists()
    killed_at = logged_steps(part)

    run(train_cmd(config, data, part, "--resume"))

    a = torch.load(full / "model.pt", map_location="cpu", weights_only=True)["model"]
    b = torch.load(part / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in step_records(part)] == [r["loss"] for r in step_records(full)]
    m_full = json.loads((full / "metrics.json").read_text())
    m_part = json.loads((part / "metrics.json").read_text())
    assert {k: v for k, v in m_part.items() if k not in TIMING_KEYS} == {
        k: v for k, v in m_full.items() if k not in TIMING_KEYS
    }
    print(
        f"[reliability] killed at checkpoint step {position['step']} "
        f"(log had {killed_at} step records), resumed to {m_part['steps']} steps"
    )

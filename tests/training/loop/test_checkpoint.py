"""Checkpoint files: RNG round trip, atomic writes, safe loading."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from training.loop.checkpoint import (
    CheckpointError,
    Position,
    atomic_torch_save,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def _draw():
    return torch.rand(4).tolist(), np.random.rand(3).tolist(), random.random(), np.random.randn()


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gauss value in numpy's legacy state
    atomic_torch_save({"format": 1, "rng": capture_rng()}, tmp_path / "c.pt")
    expected = _draw()
    _draw()  # move every generator on
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draw() == expected


def test_save_checkpoint_holds_everything_for_a_resume(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(
        tmp_path / "ckpt.pt",
        model=model,
        model_args={"in": 3, "out": 2},
        optimizers={"dense": opt},
        position=Position(epoch=1, batch=7, step=42),
        trainer_state={"best_value": 0.7, "best_epoch": 0},
        config={"task": "ctr"},
    )
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert Position.from_dict(ckpt["position"]) == Position(1, 7, 42)
    assert ckpt["model_args"] == {"in": 3, "out": 2}
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict(ckpt["optimizers"]["dense"])
    assert fresh.state_dict()["state"][0]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left


class Evil:
    """Any class outside torch's weights_only allow-list."""


def test_unsafe_or_foreign_files_are_refused(tmp_path):
    torch.save({"format": 1, "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a rocketrank checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_killed_writer_leaves_the_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"format": 1, "value": torch.tensor([1.0])}, target)
    # the child dies (os._exit) in the middle of writing a new version
    script = textwrap.dedent(
        f"""
        import os, torch
        from training.loop import checkpoint

        def dying_save(obj, fh):
            fh.write(b"partial")
            os._exit(1)

        checkpoint.torch.save = dying_save
        checkpoint.atomic_torch_save({{"format": 1, "value": torch.tensor([2.0])}}, {str(target)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=".", check=False)
    assert proc.returncode == 1
    assert load_checkpoint(target)["value"].item() == 1.0

"""Per-net early stopping: the booster frozen at its best validation state, pre-training.

Which parameters move after the freeze, which state the teacher is restored to,
and that a run interrupted after the freeze resumes to the uninterrupted result.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers.trainer import tiny_config, write_tiny_data
from training.config.errors import ConfigError
from training.data.prepare import prepare_data
from training.loop import trainer as trainer_mod
from training.loop.distributed import SINGLE_PROCESS
from training.loop.early_stopping import track_teacher
from training.loop.errors import TrainingError
from training.loop.options import TrainOptions
from training.loop.step_parts import forward_for_loss
from training.loop.trainer import train

QUIET = {"progress": False, "threads": 1}
FREEZE = {"teacher_stop": "best_valid", "teacher_max_epochs": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("tiny") / "data", rows=8_000)


def _params(named) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in named}


def _start(cfg, data, run_dir):
    return trainer_mod._start(cfg, data, run_dir, TrainOptions(**QUIET), None, SINGLE_PROCESS)


def _evals(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


@pytest.mark.parametrize("variant", ["rocket", "pfd_md"])
def test_the_freeze_restores_the_best_booster_and_only_the_light_side_trains_after(
    data_dir, tmp_path, variant
) -> None:
    cfg = tiny_config(variant, epochs=3, distill={"teacher_stop": "best_valid"})
    data = prepare_data(data_dir, cfg, max_rows=3000)
    run = _start(cfg, data, tmp_path / "run")
    model = run.model
    batches = list(data.train.iter_batches(256, shuffle=True, seed=0, epoch=0))
    for batch in batches[:3]:
        trainer_mod._step(run, batch, 0)
    best_booster = _params(model.booster_only_parameters())
    track_teacher(run, {"auc": 0.70, "logloss": 0.2}, epoch=0)  # the best
    assert not run.state.teacher.frozen
    for batch in batches[3:6]:
        trainer_mod._step(run, batch, 1)
    moved = _params(model.booster_only_parameters())
    assert any(not torch.equal(moved[n], best_booster[n]) for n in moved)
    # the light net ran out of patience in the same epoch the booster went bad ...
    run.state.early.bad_evals, run.state.early.stopped_early = 1, True
    track_teacher(run, {"auc": 0.65, "logloss": 0.3}, epoch=1)  # worse: freeze
    # ... and gets a fresh patience against the frozen best teacher
    assert run.state.early.bad_evals == 0 and not run.state.early.stopped_early
    teacher = run.state.teacher
    assert teacher.frozen and teacher.frozen_after_epoch == 1 and teacher.early.best_epoch == 0

    # restored to the best (epoch 0) state, not the last one, and no longer trainable
    for name, p in model.booster_only_parameters():
        assert torch.equal(p, best_booster[name]), name
        assert not p.requires_grad
    frozen = run.frozen_teacher
    assert frozen is not None and not frozen.training
    assert all(not p.requires_grad for p in frozen.parameters())

    light, shared = _params(model.light_only_parameters()), _params(model.shared_parameters())
    teacher_view = _params(frozen.named_parameters())
    for batch in batches[6:9]:
        trainer_mod._step(run, batch, 2)
    # booster-only parameters: no gradient, no update
    for name, p in model.booster_only_parameters():
        assert p.grad is None and torch.equal(p, best_booster[name]), name
    # light-only and shared parameters keep learning (light BCE + hint)
    assert any(not torch.equal(p, light[n]) for n, p in model.light_only_parameters())
    assert any(not torch.equal(p, shared[n]) for n, p in model.shared_parameters())
    # the teacher keeps its own snapshot of the shared tables: it really is frozen
    for name, p in frozen.named_parameters():
        assert torch.equal(p, teacher_view[name]), name
    # and the hint's target is the frozen teacher's logit
    feats = batches[0].features
    out = forward_for_loss(model, feats, run.variant, run.booster_source)
    with torch.no_grad():
        assert torch.equal(out.booster_logit, frozen.booster_logit(dict(feats)))
        assert not torch.equal(out.booster_logit, model.booster_logit(dict(feats)))


def test_a_full_run_freezes_after_the_cap_and_reports_the_frozen_booster(data_dir, tmp_path):
    cfg = tiny_config(
        "rocket",
        epochs=3,
        distill=FREEZE,
        optim={"early_stopping_patience": 2, "max_grad_norm": 1.0},
    )
    data = prepare_data(data_dir, cfg, max_rows=3000)
    result = train(cfg, data, tmp_path / "run", TrainOptions(**QUIET))
    record = result.metrics["teacher_stop"]
    assert record["frozen"] and record["frozen_after_epoch"] == 0 and record["best_epoch"] == 0
    evals = _evals(tmp_path / "run")
    assert [e["teacher_frozen"] for e in evals] == [True, True, True]
    # the booster scores the same on valid at every epoch after the freeze
    assert evals[1]["booster"]["auc"] == evals[2]["booster"]["auc"] == evals[0]["booster"]["auc"]
    # model.pt's booster-only weights are the teacher's best state
    teacher_state = torch.load(tmp_path / "run" / "teacher.pt", weights_only=True)["model"]
    stored = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    for name, _ in result.model.booster_only_parameters():
        assert torch.equal(stored[name], teacher_state[name]), name


@pytest.mark.parametrize("when", ["after_freeze", pytest.param("before", marks=pytest.mark.slow)])
def test_resume_after_the_freeze_ends_where_the_uninterrupted_run_does(
    data_dir, tmp_path, when
) -> None:
    cfg = tiny_config(
        "pfd_md",
        epochs=3,
        model={"dropout": 0.2},
        distill={**FREEZE, "hint": "soft_bce", "lambda": 0.8},
        optim={"early_stopping_patience": 2},
    )
    data = prepare_data(data_dir, cfg, max_rows=2000)
    per_epoch = data.train.num_batches(256)
    assert per_epoch > 4
    opts = dict(checkpoint_every=3, **QUIET)
    full = train(cfg, data, tmp_path / "full", TrainOptions(**opts))
    part = tmp_path / "part"
    # stop inside epoch 1 (after the freeze at the end of epoch 0) or inside epoch 0
    stop = per_epoch + 4 if when == "after_freeze" else 4
    first = train(cfg, data, part, TrainOptions(stop_after_steps=stop, **opts))
    assert first.interrupted
    ckpt = torch.load(part / "checkpoint.pt", weights_only=True)
    assert ckpt["trainer"]["teacher"]["frozen"] is (when == "after_freeze")
    torch.manual_seed(999)
    np.random.seed(5)
    resumed = train(cfg, data, part, TrainOptions(resume=True, **opts))
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(part / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    assert resumed.metrics["teacher_stop"] == full.metrics["teacher_stop"]
    assert resumed.metrics["light"]["auc"] == pytest.approx(full.metrics["light"]["auc"], abs=1e-9)


def test_pretraining_trains_the_booster_alone_then_the_joint_phase_starts(data_dir, tmp_path):
    cfg = tiny_config(
        "pfd",
        epochs=2,
        distill={"teacher_pretrain_epochs": 1, "schedule": "step", "warmup_steps": 2},
    )
    data = prepare_data(data_dir, cfg, max_rows=2000)
    run = _start(cfg, data, tmp_path / "run")
    model = run.model
    light, booster = (
        _params(model.light_only_parameters()),
        _params(model.booster_only_parameters()),
    )
    shared = _params(model.shared_parameters())
    batches = list(data.train.iter_batches(256, shuffle=True, seed=0, epoch=0))
    terms, _ = trainer_mod._step(run, batches[0], 0)
    assert run.pretraining(0) and not run.pretraining(1)
    assert terms.lam == 0.0 and np.isnan(float(terms.light))
    for name, p in model.light_only_parameters():
        assert torch.equal(p, light[name]), name  # not stepped
    assert any(not torch.equal(p, booster[n]) for n, p in model.booster_only_parameters())
    assert any(not torch.equal(p, shared[n]) for n, p in model.shared_parameters())
    # the joint phase: light net trains; the warm-up counts from the joint phase's first step
    run.step = run.steps_per_epoch
    terms, _ = trainer_mod._step(run, batches[1], 1)
    assert terms.lam == 0.0 and np.isfinite(float(terms.light))
    assert any(not torch.equal(p, light[n]) for n, p in model.light_only_parameters())
    run.step = run.steps_per_epoch + 2
    terms, _ = trainer_mod._step(run, batches[2], 1)
    assert terms.lam == pytest.approx(0.5)


def test_recipe_options_are_checked(data_dir, tmp_path) -> None:
    with pytest.raises(ConfigError, match="teacher_max_epochs"):
        tiny_config("rocket", distill={"teacher_max_epochs": 2})
    with pytest.raises(ConfigError, match="teacher_patience"):
        tiny_config("rocket", distill={"teacher_stop": "best_valid", "teacher_patience": 0})
    with pytest.raises(ConfigError, match="teacher_stpo"):
        tiny_config("rocket", distill={"teacher_stpo": "best_valid"})
    cfg = tiny_config("rocket", epochs=2, distill={"teacher_pretrain_epochs": 2})
    data = prepare_data(data_dir, cfg, max_rows=1000)
    with pytest.raises(TrainingError, match="teacher_pretrain_epochs"):
        train(cfg, data, tmp_path / "run", TrainOptions(**QUIET))
    # light_alone ignores the teacher options (nothing to freeze)
    plain = tiny_config("light_alone", epochs=1, distill=FREEZE)
    result = train(plain, data, tmp_path / "alone", TrainOptions(**QUIET))
    assert result.metrics["teacher_stop"] is None

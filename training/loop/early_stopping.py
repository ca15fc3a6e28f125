"""End-of-epoch validation and the two early stoppings it books.

The records themselves (:class:`training.loop.state.EarlyStopping`, ``TeacherStop``)
are in ``training.loop.state``; this module updates them after each validation:
the watched net's (the light net; the booster for ``booster_alone``), whose best
epoch is kept in ``RUN/best.pt`` and restored at the end, and the booster's own.

Per-net early stopping (``distill.teacher_stop: best_valid``, synchronous variants):
the booster's validation metric is tracked on its own; when it has not improved for
``distill.teacher_patience`` evaluations (or after ``distill.teacher_max_epochs``
epochs), the booster is *frozen*: a copy of the whole model at the booster's best
validation epoch (``RUN/teacher.pt``) becomes the teacher, evaluated in eval mode
under ``no_grad`` for every later step, and the model's own booster-only
parameters are reset to that state and stop training (``requires_grad`` False, no
gradient, so their optimisers skip them). Shared tables keep training, from the
light side only (light BCE + hint); the frozen teacher reads its own snapshot of
them, so it really is fixed. The light net's early-stopping patience restarts at the
freeze (its target changed). ``distill.teacher_pretrain_epochs``: the first epochs
train the booster alone (``booster_alone`` loss; the light net does not run).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from typing import TextIO

import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.joint import JointModel
from models.provenance import json_safe
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.rules import PFD_VARIANTS, ROCKET_VARIANTS, Variant
from training.loop.checkpoint import atomic_torch_save
from training.loop.errors import TrainingError
from training.loop.evaluation import evaluate_model
from training.loop.run_context import Run
from training.loop.run_files import BEST_FILE, TEACHER_FILE

log = logging.getLogger(__name__)


def teacher_stop_plan(
    cfg: RunConfig, data: PreparedData, variant: Variant, epochs: int
) -> tuple[bool, int]:
    """Whether the run freezes its booster (``distill.teacher_stop``), and its pre-training epochs.

    Both apply to the synchronous variants only (``ROCKET_VARIANTS | PFD_VARIANTS``).

    Raises:
        TrainingError: ``best_valid`` without a validation split, or pre-training
            that leaves no epoch for the light net.
    """
    synchronous = variant in ROCKET_VARIANTS | PFD_VARIANTS
    teacher_stop = synchronous and cfg.distill.teacher_stop == "best_valid"
    pretrain_epochs = cfg.distill.teacher_pretrain_epochs if synchronous else 0
    if teacher_stop and (data.valid is None or not len(data.valid)):
        raise TrainingError(
            "distill.teacher_stop 'best_valid' tracks the booster on the validation split, "
            "and this data has none"
        )
    if pretrain_epochs >= epochs:
        raise TrainingError(
            f"distill.teacher_pretrain_epochs ({pretrain_epochs}) leaves no epoch of the "
            f"{epochs} for the light net"
        )
    return teacher_stop, pretrain_epochs


def validate(run: Run, epoch: int, log_file: TextIO, bar: tqdm) -> None:
    """Evaluate on valid, book both early stoppings, log the ``"kind": "eval"`` record."""
    assert run.data.valid is not None
    scores = evaluate_model(
        run.model,
        run.data.valid,
        run.data.label,
        run.cfg.data.eval_batch_size,
        booster_source=run.booster_source,
        dist=run.dist,
    )
    early = run.state.early
    value = scores[run.watched][early.metric]
    # pre-training epochs do not train the light net: its early stopping starts after them
    if not run.pretraining(epoch) and early.record(value, epoch) and early.patience > 0:
        run.best_state = snapshot(run.model)
        if run.dist.is_main:
            atomic_torch_save({"format": 1, "model": run.best_state}, run.run_dir / BEST_FILE)
    if run.teacher_stop and not run.state.teacher.frozen:
        track_teacher(run, scores["booster"], epoch)
    record = {"kind": "eval", "split": "valid", "step": run.step, "epoch": epoch} | scores
    if run.teacher_stop:
        record["teacher_frozen"] = run.state.teacher.frozen
    log_file.write(json.dumps(json_safe(record)) + "\n")
    if run.dist.is_main:
        bar.write(
            f"epoch {epoch}: valid {run.watched} {early.metric} {value:.4f} "
            f"(light auc {scores['light']['auc']:.4f}, "
            f"booster auc {scores['booster']['auc']:.4f})"
        )


def snapshot(model: JointModel) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state dict (kept while training goes on)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def track_teacher(run: Run, booster_scores: Mapping[str, float], epoch: int) -> None:
    """The booster's own early stopping: remember its best state, freeze when it is done."""
    teacher = run.state.teacher
    if teacher.early.record(booster_scores[teacher.early.metric], epoch):
        run.teacher_best = snapshot(run.model)
        if run.dist.is_main:
            atomic_torch_save({"format": 1, "model": run.teacher_best}, run.run_dir / TEACHER_FILE)
    cap = run.cfg.distill.teacher_max_epochs
    out_of_patience = teacher.early.bad_evals >= teacher.early.patience
    if (out_of_patience or (cap and epoch + 1 >= cap)) and run.teacher_best is not None:
        teacher.frozen, teacher.frozen_after_epoch = True, epoch
        freeze_teacher(run, restore_booster=True)
        # the student's target just changed to the best teacher: its patience restarts,
        # so an epoch spent on the overfitting booster does not end the run
        run.state.early.bad_evals = 0
        run.state.early.stopped_early = False
        log.info(
            "booster frozen after epoch %d at its best validation epoch %d (%s %.4f)",
            epoch,
            teacher.early.best_epoch,
            teacher.early.metric,
            teacher.early.best_value,
        )


def freeze_teacher(run: Run, *, restore_booster: bool) -> None:
    """Build the frozen teacher from ``run.teacher_best``; stop the booster's training.

    Args:
        run: the run (``teacher_best`` set).
        restore_booster: also copy the best state into the model's booster-only
            parameters (at the freeze; a resumed run's checkpoint already has them).
    """
    assert run.teacher_best is not None
    frozen = copy.deepcopy(run.model)
    frozen.load_state_dict(run.teacher_best)
    frozen.eval()
    frozen.requires_grad_(False)
    run.frozen_teacher = frozen
    best = dict(frozen.named_parameters())
    with torch.no_grad():
        for name, p in run.model.booster_only_parameters():
            if restore_booster:
                p.copy_(best[name])
            p.requires_grad_(False)
            p.grad = None


__all__ = ["freeze_teacher", "snapshot", "teacher_stop_plan", "track_teacher", "validate"]

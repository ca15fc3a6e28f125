"""The training loop: booster and light net trained jointly, read top to bottom.

One call of :func:`train` is one run::

    data = prepare_data("data/", cfg)                    # validate + encode once
    result = train(cfg, data, "runs/fine", TrainOptions())
    result.metrics["light"]["auc"]

What a run does, in order:

1. seed torch / numpy / Python from ``cfg.seed``; build ``JointModel`` from the
   config and the fitted encoder (``training.config.model_args``, ``training.loop.build``);
2. two optimisers: the embedding tables with ``SparseAdam`` when the model has
   sparse gradients (``model.sparse: true`` — only the rows a batch touches are
   read and written; tables under ``model.sparse_min_rows`` rows stay dense and
   join the dense group), else ``Adam``; every other parameter with fused ``AdamW``;
3. for each epoch, for each batch of the training split (chunked shuffle of the
   data layer, a function of ``seed`` and ``epoch``): ``forward_joint`` →
   ``compute_loss`` → stop on a NaN/inf term → backward → clip → step; log to
   ``RUN/metrics.jsonl`` and the progress bar; checkpoint every
   ``checkpoint_every`` steps;
4. at each epoch end: evaluate on the validation split, early-stop bookkeeping
   (the light net's, and the booster's own under ``distill.teacher_stop``),
   checkpoint (the position then points at the next epoch);
5. at the end: restore the best epoch (early stopping on), evaluate booster and
   light net on the test split, fit Platt calibration of the light logit on the
   validation split (``light_calibrated`` in ``metrics.json``), write
   ``model.pt``, ``metrics.json`` and ``curves.png``.

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

A resumed run (``TrainOptions(resume=True)``) loads the last checkpoint —
parameters, optimiser moments, RNG states, the early-stopping record and the
data position (epoch, batch) — skips the batches already trained and so ends
exactly where an uninterrupted run would.

Two-stage KD (``distill.variant: two_stage_kd``) needs a pretrained booster:
pass it as ``teacher`` (a frozen ``JointModel``); its booster logits replace the
student model's, which never runs its own booster.

``RUN/`` layout: ``training/loop/run_files.py``. The functions below follow the
order above: :func:`_start`, :func:`_restore`, :func:`_train_epoch` (of
:func:`_step`), :func:`_end_epoch`, :func:`_finish`.
"""

# Over 400 lines on purpose: the loop reads top to bottom in this one file (options,
# one step's pieces, then train -> _start -> _restore -> _train_epoch/_step -> _end_epoch
# -> _finish); what it is built from lives in the sibling modules of training/loop/.

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.joint import JointModel, JointModelArgs, JointOutput
from models.provenance import json_safe
from training.config import ConfigError, RunConfig
from training.data.prepare import PreparedData
from training.distill import (
    PFD_VARIANTS,
    ROCKET_VARIANTS,
    DistillSettings,
    Hint,
    LambdaSchedule,
    LossTerms,
    Variant,
    compute_loss,
    nets_needed,
)
from training.evaluate import apply_platt, evaluate_scores, fit_platt
from training.loop.build import build_model, build_optimizers, seed_everything
from training.loop.checkpoint import (
    CheckpointError,
    Position,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from training.loop.distributed import SINGLE_PROCESS, DistContext
from training.loop.errors import TrainingDivergedError, TrainingError
from training.loop.evaluation import evaluate_model, light_logits, predict
from training.loop.run_files import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    ENCODER_FILE,
    LOG_FILE,
    METRICS_FILE,
    OUTPUT_FILES,
    STATE_DICT_FILE,
    TEACHER_FILE,
    read_log,
    truncate_log,
)
from training.loop.state import EarlyStopping, RunState, TeacherStop
from training.plots import plot_learning_curves

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- options and results


@dataclass(frozen=True)
class TrainOptions:
    """How to run (not what to learn — that is the :class:`RunConfig`).

    Attributes:
        epochs: override ``cfg.optim.epochs``.
        resume: continue from ``RUN/checkpoint.pt``.
        checkpoint_every: also checkpoint every N optimiser steps (0 = epoch ends only).
        early_stopping_metric: validation metric of the net being distilled
            (the light net; the booster for ``booster_alone``): ``auc``
            (higher is better) or ``logloss`` (lower is better).
        stop_after_steps: stop (after checkpointing) once this many optimiser
            steps are done — a deliberate interruption, resumable with ``resume``.
        progress: show the tqdm progress bar.
        threads: ``torch.set_num_threads`` during the run, restored after (None = leave it).
        log_every: write a step record to ``metrics.jsonl`` every N steps.
    """

    epochs: int | None = None
    resume: bool = False
    checkpoint_every: int = 500
    early_stopping_metric: Literal["auc", "logloss"] = "auc"
    stop_after_steps: int | None = None
    progress: bool = True
    threads: int | None = None
    log_every: int = 1

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.early_stopping_metric not in ("auc", "logloss"):
            raise ValueError(
                "early_stopping_metric must be 'auc' or 'logloss', "
                f"got {self.early_stopping_metric!r}"
            )
        if self.log_every <= 0:
            raise ValueError(f"log_every must be > 0, got {self.log_every}")


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        run_dir: the run directory.
        metrics: the content of ``metrics.json`` (empty when interrupted).
        model: the trained model (best epoch restored when early stopping is on).
        interrupted: the run stopped at ``stop_after_steps`` (resume it later).
        position: where training stands.
    """

    run_dir: Path
    metrics: dict[str, Any]
    model: JointModel
    interrupted: bool = False
    position: Position = field(default_factory=Position)


# --------------------------------------------------------------------------- one step's pieces


def forward_for_loss(
    model: JointModel,
    features: Mapping[str, Tensor],
    variant: Variant,
    teacher: JointModel | None,
) -> JointOutput:
    """The outputs ``compute_loss`` needs for ``variant``.

    With a frozen ``teacher`` (``two_stage_kd``'s pretrained booster, or the
    booster frozen at its best validation state by ``distill.teacher_stop``) the
    booster outputs (logit and hidden layer) come from the teacher under
    ``no_grad`` and the model's own booster never runs.
    """
    feats = dict(features)
    if variant is Variant.TWO_STAGE_KD and teacher is None:
        raise TrainingError(
            "variant two_stage_kd needs a pretrained booster: train booster_alone first "
            "and pass it as the teacher (rocketrank ablate does both)"
        )
    run_booster, run_light = nets_needed(variant)
    if teacher is not None and run_booster and run_light:
        with torch.no_grad():
            taught = teacher.forward_joint(feats, run_booster=True, run_light=False)
        out = model.forward_joint(feats, run_booster=False, run_light=True)
        return out._replace(
            booster_logit=taught.booster_logit, booster_hidden=taught.booster_hidden
        )
    return model.forward_joint(feats, run_booster=run_booster, run_light=run_light)


def check_finite(terms: LossTerms, variant: Variant, hint: Hint, step: int, epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` naming the first non-finite term of this step."""
    total = float(terms.total.detach())
    if math.isfinite(total):
        return
    run_booster, run_light = nets_needed(variant)
    candidates = []
    if run_booster:
        candidates.append(("booster_bce", terms.booster))
    if run_light:
        candidates.append(("light_bce", terms.light))
    if hint is not Hint.OFF:
        candidates.append(("hint", terms.hint))
    bad = [(n, float(v)) for n, v in candidates if not math.isfinite(float(v))]
    what = ", ".join(f"{n}={v}" for n, v in bad) or f"total={total}"
    raise TrainingDivergedError(
        f"loss is not finite at step {step} (epoch {epoch}): {what}. Training stopped; the "
        f"last checkpoint holds the state before the divergence. Lower the learning rates "
        f"(optim.lr_dense / optim.lr_sparse), set optim.max_grad_norm, or check the inputs."
    )


# --------------------------------------------------------------------------- the loop


def train(
    cfg: RunConfig,
    data: PreparedData,
    run_dir: str | Path,
    options: TrainOptions | None = None,
    *,
    teacher: JointModel | None = None,
    dist: DistContext = SINGLE_PROCESS,
) -> TrainResult:
    """Train one run; see the module docstring for what happens and what is written.

    Args:
        cfg: the run config.
        data: encoded splits for ``cfg.task`` (:func:`prepare_data`).
        run_dir: output directory (created).
        options: loop options.
        teacher: frozen pretrained booster for ``two_stage_kd``.
        dist: data-parallel context (``training.loop.distributed``): every process
            trains its slice of each global batch, gradients are summed, and
            rank 0 alone writes files. Default: one process.

    Raises:
        TrainingDivergedError: a loss term became NaN/inf (names the step and the term).
        TrainingError: bad setup (no checkpoint to resume, missing teacher, ...).
    """
    options = options or TrainOptions()
    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _train(cfg, data, Path(run_dir), options, teacher, dist)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass
class _Run:
    """Everything the functions of one run share; built once by :func:`_start`."""

    cfg: RunConfig
    data: PreparedData
    run_dir: Path
    options: TrainOptions
    teacher: JointModel | None
    dist: DistContext
    model: JointModel
    args: JointModelArgs
    optimizers: dict[str, torch.optim.Optimizer]
    variant: Variant
    settings: DistillSettings
    epochs: int
    steps_per_epoch: int
    watched: Literal["light", "booster"]
    state: RunState
    clip_groups: list[list[torch.nn.Parameter]]
    teacher_stop: bool = False
    pretrain_epochs: int = 0
    position: Position = field(default_factory=Position)
    step: int = 0
    best_state: dict[str, Tensor] | None = None
    teacher_best: dict[str, Tensor] | None = None
    frozen_teacher: JointModel | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    def pretraining(self, epoch: int) -> bool:
        """Epoch ``epoch`` trains the booster alone (``distill.teacher_pretrain_epochs``)."""
        return epoch < self.joint_start_epoch

    @property
    def joint_start_epoch(self) -> int:
        """The first epoch of the joint phase (a freeze during pre-training ends it)."""
        frozen_after = self.state.teacher.frozen_after_epoch
        if self.state.teacher.frozen and frozen_after is not None:
            return min(self.pretrain_epochs, frozen_after + 1)
        return self.pretrain_epochs

    @property
    def booster_source(self) -> JointModel | None:
        """Whose booster is evaluated: the frozen teacher's, else ``None`` (the model's)."""
        return self.frozen_teacher if self.frozen_teacher is not None else self.teacher


def _train(
    cfg: RunConfig,
    data: PreparedData,
    run_dir: Path,
    options: TrainOptions,
    teacher: JointModel | None,
    dist: DistContext,
) -> TrainResult:
    run = _start(cfg, data, run_dir, options, teacher, dist)
    if options.resume:
        _restore(run)
    elif dist.is_main:
        for name in OUTPUT_FILES:
            (run_dir / name).unlink(missing_ok=True)
    run.step = run.position.step
    bar = tqdm(
        total=run.epochs * run.steps_per_epoch,
        initial=run.step,
        disable=not options.progress or not dist.is_main,
        desc=f"{run.variant.value}",
        unit="step",
        dynamic_ncols=True,
    )
    interrupted = False
    with open(run.log_path if dist.is_main else os.devnull, "a") as log_file:
        for epoch in range(run.position.epoch, run.epochs):
            if run.state.early.stopped_early:
                break
            interrupted = _train_epoch(run, epoch, log_file, bar)
            if interrupted:
                break
            _end_epoch(run, epoch, log_file, bar)
    bar.close()
    if interrupted:
        return TrainResult(run_dir, {}, run.model, interrupted=True, position=run.position)
    return _finish(run)


def _start(
    cfg: RunConfig,
    data: PreparedData,
    run_dir: Path,
    options: TrainOptions,
    teacher: JointModel | None,
    dist: DistContext,
) -> _Run:
    """Seed, build model and optimisers, write ``config.json`` and ``encoder.json``."""
    if data.task != cfg.task:
        raise TrainingError(f"data was prepared for task {data.task!r}, config says {cfg.task!r}")
    dist.check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    epochs = options.epochs or cfg.optim.epochs
    variant = Variant(cfg.distill.variant)
    steps_per_epoch = data.train.num_batches(cfg.data.batch_size)
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
    seed_everything(cfg.seed)
    model, args = build_model(cfg, data)
    model.train()
    if teacher is not None:
        teacher.eval()
        teacher.requires_grad_(False)
    optimizers = build_optimizers(model, cfg)
    if dist.is_main:
        config_record = {
            **cfg.to_dict(),
            "data_dir": str(data.data_dir) if data.data_dir else None,
            "label": data.label,
            "epochs_requested": epochs,
        }
        encoder_text = json.dumps(data.dataset.encoder.state())
        if options.resume:
            _check_resumable(run_dir, config_record, encoder_text)
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config_record, indent=2) + "\n")
        atomic_write_text(run_dir / ENCODER_FILE, encoder_text)
    early = EarlyStopping(options.early_stopping_metric, cfg.optim.early_stopping_patience)
    teacher_early = EarlyStopping(options.early_stopping_metric, cfg.distill.teacher_patience)
    joint_steps = (epochs - pretrain_epochs) * steps_per_epoch
    return _Run(
        cfg=cfg,
        data=data,
        run_dir=run_dir,
        options=options,
        teacher=teacher,
        dist=dist,
        model=model,
        args=args,
        optimizers=optimizers,
        variant=variant,
        settings=cfg.distill.settings(joint_steps, steps_per_epoch),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        # booster_alone distils nothing: early-stop on the booster it trains
        watched="booster" if variant is Variant.BOOSTER_ALONE else "light",
        state=RunState(early, TeacherStop(teacher_early)),
        clip_groups=clip_groups(model),
        teacher_stop=teacher_stop,
        pretrain_epochs=pretrain_epochs,
    )


def _check_resumable(run_dir: Path, config_record: dict[str, Any], encoder_text: str) -> None:
    """Refuse a resume on another config or other data before anything is rewritten.

    A resume continues the checkpoint's run: the run's ``config.json`` and
    ``encoder.json`` on disk must be what this process would write (the epoch
    budget may change). Comparing before writing keeps a mismatched resume from
    silently replacing the run's encoder (and so its feature encoding).
    """
    stored_config, stored_encoder = run_dir / CONFIG_FILE, run_dir / ENCODER_FILE
    if stored_config.exists():
        # compared as run configs (so keys added since with their defaults match);
        # the data's location may move, its content is checked through the encoder
        record = json.loads(stored_config.read_text())
        extras = ("data_dir", "label", "epochs_requested")
        try:
            old = RunConfig.from_dict({k: v for k, v in record.items() if k not in extras})
        except ConfigError as exc:
            raise TrainingError(f"cannot resume {run_dir}: its {CONFIG_FILE}: {exc}") from exc
        new = RunConfig.from_dict({k: v for k, v in config_record.items() if k not in extras})
        a, b = old.to_dict(), new.to_dict()
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if record.get("label") not in (None, config_record["label"]):
            changed.append("label")
        if changed:
            raise TrainingError(
                f"cannot resume {run_dir}: the run config differs in {changed} "
                "(resume with the config the run was started with, or train into a new --out)"
            )
    if stored_encoder.exists() and json.loads(stored_encoder.read_text()) != json.loads(
        encoder_text
    ):
        raise TrainingError(
            f"cannot resume {run_dir}: the data encodes differently from the run's "
            f"{ENCODER_FILE} (vocabularies or statistics changed: other data, or a different "
            "--max-rows); resume on the data the run was started with"
        )


def _restore(run: _Run) -> None:
    """Load ``checkpoint.pt``: weights, optimiser moments, RNG, position, run state."""
    try:
        ckpt = load_checkpoint(run.run_dir / CHECKPOINT_FILE)
    except CheckpointError as exc:
        raise TrainingError(f"cannot resume: {exc}") from exc
    if ckpt["model_args"] != run.args.to_dict():
        raise TrainingError(
            f"cannot resume {run.run_dir}: the checkpoint was trained with other model "
            "arguments (config or data changed)"
        )
    run.model.load_state_dict(ckpt["model"])
    for name, opt in run.optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    restore_rng(ckpt["rng"])
    run.position = Position.from_dict(ckpt["position"])
    run.state.load_dict(ckpt["trainer"])
    if run.dist.is_main:
        truncate_log(run.log_path, run.position.step)
    log.info(
        "resumed %s at epoch %d batch %d step %d", run.run_dir, *run.position.to_dict().values()
    )
    if run.state.early.best_epoch is not None and (run.run_dir / BEST_FILE).exists():
        run.best_state = load_checkpoint(run.run_dir / BEST_FILE)["model"]
    if run.state.teacher.early.best_epoch is not None and (run.run_dir / TEACHER_FILE).exists():
        run.teacher_best = load_checkpoint(run.run_dir / TEACHER_FILE)["model"]
    if run.state.teacher.frozen:
        if run.teacher_best is None:
            raise TrainingError(f"cannot resume {run.run_dir}: the frozen teacher's state is gone")
        _freeze_teacher(run, restore_booster=False)


def _checkpoint(run: _Run, position: Position) -> None:
    if not run.dist.is_main:
        return
    save_checkpoint(
        run.run_dir / CHECKPOINT_FILE,
        model=run.model,
        model_args=run.args.to_dict(),
        optimizers=run.optimizers,
        position=position,
        trainer_state=run.state.to_dict(),
        config=run.cfg.to_dict(),
    )


def _train_epoch(run: _Run, epoch: int, log_file: TextIO, bar: tqdm) -> bool:
    """The epoch's remaining batches; True when ``stop_after_steps`` interrupted it."""
    options, state = run.options, run.state
    first = run.position.batch if epoch == run.position.epoch else 0
    batches = run.dist.shard_batches(_train_batches(run, epoch))
    tick, cpu_tick = time.perf_counter(), time.process_time()
    for index, batch in enumerate(itertools.islice(batches, first, None), start=first):
        terms, rows = _step(run, batch, epoch)
        state.samples += rows
        state.train_seconds += time.perf_counter() - tick
        state.train_cpu_seconds += time.process_time() - cpu_tick
        _log_step(run, terms, epoch, index, log_file, bar)
        if options.checkpoint_every and run.step % options.checkpoint_every == 0:
            log_file.flush()
            _checkpoint(run, Position(epoch, index + 1, run.step))
        if options.stop_after_steps is not None and run.step >= options.stop_after_steps:
            log_file.flush()
            run.position = Position(epoch, index + 1, run.step)
            _checkpoint(run, run.position)
            return True
        # logging and checkpoints are not training time
        tick, cpu_tick = time.perf_counter(), time.process_time()
    return False


def _step(run: _Run, batch: Any, epoch: int) -> tuple[LossTerms, int]:
    """One optimiser step on one (global) batch; returns its loss terms and rows."""
    if run.pretraining(epoch):
        settings, schedule_step = PRETRAIN_SETTINGS, run.step
        out = run.model.forward_joint(dict(batch.features), run_booster=True, run_light=False)
    else:
        # the λ schedule (warm-up, annealing) starts with the joint phase
        settings = run.settings
        schedule_step = run.step - run.joint_start_epoch * run.steps_per_epoch
        out = forward_for_loss(run.model, batch.features, run.variant, run.booster_source)
    terms = compute_loss(out, batch.labels[run.data.label], settings, schedule_step, batch.group)
    for opt in run.optimizers.values():
        opt.zero_grad(set_to_none=True)
    terms.total.backward()
    # N processes: global-batch gradients and loss terms; one process: no-op
    terms, rows = run.dist.sync_step(run.model, terms, len(batch))
    check_finite(terms, settings.variant, settings.hint, run.step, epoch)
    if run.cfg.optim.max_grad_norm > 0:
        for group in run.clip_groups:
            torch.nn.utils.clip_grad_norm_(group, run.cfg.optim.max_grad_norm)
    for opt in run.optimizers.values():
        opt.step()
    run.step += 1
    return terms, rows


def _log_step(
    run: _Run, terms: LossTerms, epoch: int, index: int, log_file: TextIO, bar: tqdm
) -> None:
    if run.step % run.options.log_every == 0 or index == run.steps_per_epoch - 1:
        losses = terms.as_dict()
        record = {
            "kind": "step",
            "step": run.step,
            "epoch": epoch,
            "batch": index,
            "lambda": losses.pop("lambda"),
            "loss": {k: v for k, v in losses.items() if math.isfinite(v)},
            "samples_per_second": run.state.samples_per_second,
        }
        log_file.write(json.dumps(record) + "\n")
        bar.set_postfix({k: f"{v:.4f}" for k, v in record["loss"].items()}, refresh=False)
    bar.update(1)


def _end_epoch(run: _Run, epoch: int, log_file: TextIO, bar: tqdm) -> None:
    """Validation and early stopping, then the checkpoint pointing at the next epoch."""
    if run.data.valid is not None and len(run.data.valid):
        _validate(run, epoch, log_file, bar)
    log_file.flush()
    run.position = Position(epoch + 1, 0, run.step)
    _checkpoint(run, run.position)


def _validate(run: _Run, epoch: int, log_file: TextIO, bar: tqdm) -> None:
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
        run.best_state = _snapshot(run.model)
        if run.dist.is_main:
            atomic_torch_save({"format": 1, "model": run.best_state}, run.run_dir / BEST_FILE)
    if run.teacher_stop and not run.state.teacher.frozen:
        _track_teacher(run, scores["booster"], epoch)
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


def _finish(run: _Run) -> TrainResult:
    """Restore the best epoch, evaluate on test (else valid), write the run's outputs."""
    model, data, cfg = run.model, run.data, run.cfg
    if run.state.early.patience > 0 and run.best_state is not None:
        model.load_state_dict(run.best_state)
    if run.frozen_teacher is not None:
        # model.pt's booster is the teacher the light net learnt from last
        best = dict(run.frozen_teacher.named_parameters())
        with torch.no_grad():
            for name, p in model.booster_only_parameters():
                p.copy_(best[name])
    model.eval()
    final_split, final_name = (
        (data.test, "test") if data.test is not None and len(data.test) else (data.valid, "valid")
    )
    if final_split is None:
        raise TrainingError("no test or validation split to evaluate on")
    final = evaluate_model(
        model,
        final_split,
        data.label,
        cfg.data.eval_batch_size,
        booster_source=run.booster_source,
        dist=run.dist,
    )
    sample = next(final_split.iter_batches(min(256, len(final_split)))).features
    metrics = _final_metrics(run, final, final_name, _cost(run, sample))
    calibrated = _calibrate(run, final_split, final_name)
    if calibrated is not None:
        metrics["light_calibrated"] = calibrated
    if not run.dist.is_main:
        return TrainResult(run.run_dir, metrics, model, position=run.position)
    atomic_torch_save(
        {
            "format": 1,
            "model": model.state_dict(),
            "model_args": run.args.to_dict(),
            "task": cfg.task,
            "label": data.label,
            "variant": run.variant.value,
            "config": cfg.to_dict(),
        },
        run.run_dir / STATE_DICT_FILE,
    )
    text = json.dumps(json_safe(metrics), indent=2) + "\n"
    atomic_write_text(run.run_dir / METRICS_FILE, text)
    plot_learning_curves(read_log(run.log_path), run.run_dir / CURVES_FILE)
    return TrainResult(run.run_dir, metrics, model, position=run.position)


def _cost(run: _Run, sample: Mapping[str, Tensor]) -> dict[str, Any]:
    """Parameters and FLOPs per candidate; a two-stage KD booster is the teacher's."""
    cost = run.model.cost_report(sample)
    if run.booster_source is not None:
        teacher_cost = run.booster_source.cost_report(sample)
        cost["booster_params"] = teacher_cost["booster_params"]
        cost["booster_flops_per_candidate"] = teacher_cost["booster_flops_per_candidate"]
    return cost


def _final_metrics(
    run: _Run, final: dict[str, dict[str, float]], split: str, cost: dict[str, Any]
) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    state, early = run.state, run.state.early
    return {
        "variant": run.variant.value,
        "task": run.cfg.task,
        "split": split,
        "light": final["light"],
        "booster": final["booster"],
        "params": {"light": cost["light_params"], "booster": cost["booster_params"]},
        "flops_per_candidate": {
            "light": cost["light_flops_per_candidate"],
            "booster": cost["booster_flops_per_candidate"],
        },
        "light_serving_flops_per_candidate": cost["light_serving_flops_per_candidate"],
        "train_seconds": state.train_seconds,
        # CPU time of the optimiser steps: with one thread, a cost measure that other
        # processes competing for the cores do not inflate the way they inflate wall time
        "train_cpu_seconds": state.train_cpu_seconds,
        "samples_per_second": state.samples_per_second,
        "steps": run.step,
        "epochs": run.epochs,
        "best_epoch": early.best_epoch,
        "stopped_early": early.stopped_early,
        "early_stopping": {
            "metric": f"valid {run.watched} {early.metric}",
            "best": early.best_value,
        },
        "teacher_stop": _teacher_record(run),
        "batch_size": run.cfg.data.batch_size,
        "train_rows": len(run.data.train),
    }


# --------------------------------------------------------------------------- recipe pieces

PRETRAIN_SETTINGS = DistillSettings(
    variant=Variant.BOOSTER_ALONE, hint=Hint.OFF, schedule=LambdaSchedule(value=0.0)
)
"""The loss of a pre-training epoch: the booster's BCE alone."""


def clip_groups(model: JointModel) -> list[list[torch.nn.Parameter]]:
    """Booster-only, light-only and shared parameters, each clipped on its own.

    Clipping them together would let a large hint gradient on the light side
    shrink the booster's update (one norm, one factor); per group, each net's
    step depends on its own gradients only. Tables with sparse gradients are left
    out (``clip_grad_norm_`` needs dense gradients).
    """
    sparse = {id(p) for _, p in model.sparse_gradient_parameters()}
    groups = []
    for params in (
        model.booster_only_parameters(),
        model.light_only_parameters(),
        model.shared_parameters(),
    ):
        kept = [p for _, p in params if p.requires_grad and id(p) not in sparse]
        if kept:
            groups.append(kept)
    return groups


def _train_batches(run: _Run, epoch: int) -> Any:
    train, data_cfg = run.data.train, run.cfg.data
    if data_cfg.shuffle_unit == "requests":
        return train.iter_batches(
            data_cfg.batch_size, shuffle=True, seed=run.cfg.seed, epoch=epoch, unit="requests"
        )
    return train.iter_batches(data_cfg.batch_size, shuffle=True, seed=run.cfg.seed, epoch=epoch)


def _snapshot(model: JointModel) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _track_teacher(run: _Run, booster_scores: Mapping[str, float], epoch: int) -> None:
    """The booster's own early stopping: remember its best state, freeze when it is done."""
    teacher = run.state.teacher
    if teacher.early.record(booster_scores[teacher.early.metric], epoch):
        run.teacher_best = _snapshot(run.model)
        if run.dist.is_main:
            atomic_torch_save({"format": 1, "model": run.teacher_best}, run.run_dir / TEACHER_FILE)
    cap = run.cfg.distill.teacher_max_epochs
    out_of_patience = teacher.early.bad_evals >= teacher.early.patience
    if (out_of_patience or (cap and epoch + 1 >= cap)) and run.teacher_best is not None:
        teacher.frozen, teacher.frozen_after_epoch = True, epoch
        _freeze_teacher(run, restore_booster=True)
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


def _freeze_teacher(run: _Run, *, restore_booster: bool) -> None:
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


def _teacher_record(run: _Run) -> dict[str, Any] | None:
    """``metrics.json``'s ``teacher_stop`` block (None when the option is off)."""
    if not run.teacher_stop:
        return None
    t = run.state.teacher
    return {
        "metric": f"valid booster {t.early.metric}",
        "best": t.early.best_value,
        "best_epoch": t.early.best_epoch,
        "frozen": t.frozen,
        "frozen_after_epoch": t.frozen_after_epoch,
        "pretrain_epochs": run.pretrain_epochs,
    }


def _calibrate(run: _Run, final_split: Any, final_name: str) -> dict[str, Any] | None:
    """Platt scaling of the light logit fitted on valid, applied to the final split.

    Returns ``metrics.json``'s ``light_calibrated`` block: the fitted ``a``, ``b``
    (calibrated probability ``σ(a·z + b)``), and the final split's calibration
    ratio and logloss before and after (AUC is unchanged for ``a > 0``).
    None without a validation split.
    """
    valid = run.data.valid
    if valid is None or not len(valid):
        return None
    bs = run.cfg.data.eval_batch_size
    label = run.data.label
    z_valid = light_logits(run.model, valid, bs, dist=run.dist)
    a, b = fit_platt(z_valid, valid.labels[label].double().numpy())
    z = light_logits(run.model, final_split, bs, dist=run.dist)
    y = final_split.labels[label].double().numpy()
    users, groups = final_split.user.numpy(), final_split.group.numpy()
    before = evaluate_scores(y, z, users, groups)
    after = evaluate_scores(y, apply_platt(z, a, b), users, groups)
    keys = ("calibration", "logloss", "auc")
    return {
        "a": a,
        "b": b,
        "fitted_on": "valid",
        "split": final_name,
        "before": {k: before[k] for k in keys},
        "after": {k: after[k] for k in keys},
    }


__all__ = [
    "STATE_DICT_FILE",
    "TrainOptions",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingError",
    "check_finite",
    "clip_groups",
    "evaluate_model",
    "forward_for_loss",
    "predict",
    "train",
]

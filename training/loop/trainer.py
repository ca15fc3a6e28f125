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
   (the light net's, and the booster's own under ``distill.teacher_stop``:
   ``training.loop.early_stopping``), checkpoint (the position then points at
   the next epoch);
5. at the end: restore the best epoch (early stopping on), evaluate booster and
   light net on the test split, fit Platt calibration of the light logit on the
   validation split (``light_calibrated`` in ``metrics.json``), write
   ``model.pt``, ``metrics.json`` and ``curves.png``.

A resumed run (``TrainOptions(resume=True)``) loads the last checkpoint —
parameters, optimiser moments, RNG states, the early-stopping record and the
data position (epoch, batch) — skips the batches already trained and so ends
exactly where an uninterrupted run would.

Two-stage KD (``distill.variant: two_stage_kd``) needs a pretrained booster:
pass it as ``teacher`` (a frozen ``JointModel``); its booster logits replace the
student model's, which never runs its own booster.

The functions below follow the order above: :func:`_start`, :func:`_restore`,
:func:`_train_epoch` (of :func:`_step`), :func:`_end_epoch`, :func:`_finish`. What
they are built from lives next to this module in ``training/loop/``: ``options``
(:class:`TrainOptions`, :class:`TrainResult`), ``run_context`` (the state one run
shares), ``step_parts`` (one step's forward, NaN check, clipping),
``early_stopping`` (validation and the booster's freeze), ``outputs`` (step
records, ``metrics.json``, ``model.pt``), ``run_setup`` (``config.json``,
``encoder.json``, the resume check), ``run_files`` (the ``RUN/`` layout) and
``tracking`` (TensorBoard and MLflow, fed from the records of ``metrics.jsonl``).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm.auto import tqdm

from models.joint import JointModel
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.losses import LossTerms, compute_loss
from training.distill.rules import Variant
from training.loop.build import build_model, build_optimizers, seed_everything
from training.loop.checkpoint import (
    CheckpointError,
    Position,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from training.loop.distributed import SINGLE_PROCESS, DistContext
from training.loop.early_stopping import freeze_teacher, teacher_stop_plan, validate
from training.loop.errors import TrainingError
from training.loop.evaluation import evaluate_model
from training.loop.options import TrainOptions, TrainResult
from training.loop.outputs import calibrate, final_metrics, log_step, model_cost, write_outputs
from training.loop.run_context import Run, train_batches
from training.loop.run_files import (
    BEST_FILE,
    CHECKPOINT_FILE,
    OUTPUT_FILES,
    TEACHER_FILE,
    truncate_log,
)
from training.loop.run_setup import write_config_and_encoder
from training.loop.state import EarlyStopping, RunState, TeacherStop
from training.loop.step_parts import PRETRAIN_SETTINGS, check_finite, clip_groups, forward_for_loss
from training.loop.tracking import open_tracker

log = logging.getLogger(__name__)


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
    # TensorBoard / MLflow see every record metrics.jsonl gets (options.tracking)
    with open_tracker(run) as tracker:
        with open(run.log_path if dist.is_main else os.devnull, "a") as raw_log:
            log_file = tracker.mirror(raw_log)
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
        result = _finish(run)
        tracker.finish(result.metrics, run.step)
    return result


def _start(
    cfg: RunConfig,
    data: PreparedData,
    run_dir: Path,
    options: TrainOptions,
    teacher: JointModel | None,
    dist: DistContext,
) -> Run:
    """Seed, build model and optimisers, write ``config.json`` and ``encoder.json``."""
    if data.task != cfg.task:
        raise TrainingError(f"data was prepared for task {data.task!r}, config says {cfg.task!r}")
    dist.check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    epochs = options.epochs or cfg.optim.epochs
    variant = Variant(cfg.distill.variant)
    steps_per_epoch = data.train.num_batches(cfg.data.batch_size)
    teacher_stop, pretrain_epochs = teacher_stop_plan(cfg, data, variant, epochs)
    seed_everything(cfg.seed)
    model, args = build_model(cfg, data)
    model.train()
    if teacher is not None:
        teacher.eval()
        teacher.requires_grad_(False)
    optimizers = build_optimizers(model, cfg)
    if dist.is_main:
        write_config_and_encoder(run_dir, cfg, data, epochs, resume=options.resume)
    early = EarlyStopping(options.early_stopping_metric, cfg.optim.early_stopping_patience)
    teacher_early = EarlyStopping(options.early_stopping_metric, cfg.distill.teacher_patience)
    joint_steps = (epochs - pretrain_epochs) * steps_per_epoch
    return Run(
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


def _restore(run: Run) -> None:
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
        freeze_teacher(run, restore_booster=False)


def _checkpoint(run: Run, position: Position) -> None:
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


def _train_epoch(run: Run, epoch: int, log_file: TextIO, bar: tqdm) -> bool:
    """The epoch's remaining batches; True when ``stop_after_steps`` interrupted it."""
    options, state = run.options, run.state
    first = run.position.batch if epoch == run.position.epoch else 0
    batches = train_batches(run, epoch)
    if not getattr(run.data.train, "rank_local", False):  # a RankShard's batches are its own
        batches = run.dist.shard_batches(batches)
    tick, cpu_tick = time.perf_counter(), time.process_time()
    for index, batch in enumerate(itertools.islice(batches, first, None), start=first):
        terms, rows = _step(run, batch, epoch)
        state.samples += rows
        state.train_seconds += time.perf_counter() - tick
        state.train_cpu_seconds += time.process_time() - cpu_tick
        log_step(run, terms, epoch, index, log_file, bar)
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


def _step(run: Run, batch: Any, epoch: int) -> tuple[LossTerms, int]:
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


def _end_epoch(run: Run, epoch: int, log_file: TextIO, bar: tqdm) -> None:
    """Validation and early stopping, then the checkpoint pointing at the next epoch."""
    if run.data.valid is not None and len(run.data.valid):
        validate(run, epoch, log_file, bar)
    log_file.flush()
    run.position = Position(epoch + 1, 0, run.step)
    _checkpoint(run, run.position)


def _finish(run: Run) -> TrainResult:
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
    metrics = final_metrics(run, final, final_name, model_cost(run, sample))
    calibrated = calibrate(run, final_split, final_name)
    if calibrated is not None:
        metrics["light_calibrated"] = calibrated
    if run.dist.is_main:
        write_outputs(run, metrics)
    return TrainResult(run.run_dir, metrics, model, position=run.position)


__all__ = ["train"]

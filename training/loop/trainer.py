"""The training loop: booster and light net trained jointly, read top to bottom.

One call of :func:`train` is one run::

    data = prepare_data("data/", cfg)                    # validate + encode once
    result = train(cfg, data, "runs/fine", TrainOptions())
    result.metrics["light"]["auc"]

What a run does, in order:

1. seed torch / numpy / Python from ``cfg.seed``; build ``JointModel`` from the
   config and the fitted encoder (``training.config.model_args``);
2. two optimisers: the embedding tables with ``SparseAdam`` when the model has
   sparse gradients (``model.sparse: true`` — only the rows a batch touches are
   read and written; tables under ``model.sparse_min_rows`` rows stay dense and
   join the dense group), else ``Adam``; every other parameter with fused ``AdamW``;
3. for each epoch, for each batch of the training split (chunked shuffle of the
   data layer, a function of ``seed`` and ``epoch``): ``forward_joint`` →
   ``compute_loss`` → stop on a NaN/inf term → backward → clip → step; log to
   ``RUN/metrics.jsonl`` and the progress bar; checkpoint every
   ``checkpoint_every`` steps;
4. at each epoch end: evaluate on the validation split, early-stop bookkeeping,
   checkpoint (the position then points at the next epoch);
5. at the end: restore the best epoch (early stopping on), evaluate booster and
   light net on the test split, write ``model.pt``, ``metrics.json`` and
   ``curves.png``.

A resumed run (``TrainOptions(resume=True)``) loads the last checkpoint —
parameters, optimiser moments, RNG states, the early-stopping record and the
data position (epoch, batch) — skips the batches already trained and so ends
exactly where an uninterrupted run would.

Two-stage KD (``distill.variant: two_stage_kd``) needs a pretrained booster:
pass it as ``teacher`` (a frozen ``JointModel``); its booster logits replace the
student model's, which never runs its own booster.

``RUN/`` layout (see ``docs/INTERNALS.md``, "Trainer → export"):
``config.json``, ``encoder.json``, ``checkpoint.pt``, ``best.pt``,
``metrics.jsonl``, ``model.pt``, ``metrics.json``, ``curves.png``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.joint import JointModel, JointModelArgs, JointOutput
from training.checkpoint import (
    CheckpointError,
    Position,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from training.config import RunConfig, model_args
from training.data.dataset import EncodedSplit
from training.data.loader import Dataset, load_dataset
from training.data.readers import read_columns
from training.data.shuffle import CHUNK_ROWS
from training.data.streaming import StreamingSplit
from training.distill import Hint, LossTerms, Variant, compute_loss, nets_needed
from training.distributed import SINGLE_PROCESS, DistContext
from training.evaluate import evaluate_scores, json_safe
from training.plots import plot_learning_curves

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
MODEL_FILE = "model.pt"
ENCODER_FILE = "encoder.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


class TrainingError(RuntimeError):
    """The run cannot continue; the message says why and what to do."""


class TrainingDivergedError(TrainingError):
    """A loss term became NaN or infinite; the message names the step and the term."""


# --------------------------------------------------------------------------- options and data


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
class PreparedData:
    """The encoded splits of one task, shared by every run that uses them.

    Attributes:
        dataset: the validated, encoded data directory (schema + fitted encoder).
        task: the task name; ``label`` its label name (key of ``Batch.labels``).
        train: the training split (in memory, or streamed from Parquet).
        valid: validation split (early stopping), or None.
        test: test split (final metrics), or None (then final metrics use valid).
        data_dir: where the data came from.
    """

    dataset: Dataset
    task: str
    label: str
    train: EncodedSplit | StreamingSplit
    valid: EncodedSplit | None
    test: EncodedSplit | None
    data_dir: Path | None = None


def prepare_data(
    data_dir: str | Path,
    cfg: RunConfig,
    *,
    max_rows: int | None = None,
    cache: bool = True,
) -> PreparedData:
    """Read, validate and encode a data directory once for ``cfg.task``.

    The task's ``where`` filter (e.g. CVR on clicked rows) is applied to every
    split, so training and evaluation see the same population.

    Args:
        data_dir: directory with ``train``/``valid``/``test`` files and ``schema.yaml``.
        cfg: the run config (task; ``data.chunk_rows`` > 0 streams the training split).
        max_rows: use at most the first N rows of each split file (quick runs).
        cache: reuse the data layer's encoded-split cache.
    """
    if max_rows is not None and max_rows <= 0:
        raise ValueError(f"max_rows must be > 0, got {max_rows}")
    # the in-memory split shuffles with the same chunk plan as a streamed one
    chunk_rows = cfg.data.chunk_rows or CHUNK_ROWS
    dataset = load_dataset(data_dir, tasks=[cfg.task], cache=cache, chunk_rows=chunk_rows)
    schema = dataset.schema
    label = schema.task(cfg.task).label

    def split(name: str) -> EncodedSplit | None:
        if name not in dataset.splits:
            return None
        s = dataset.splits[name]
        if max_rows is not None and len(s) > max_rows:
            s = s.filter_rows(torch.arange(len(s)) < max_rows)
        return s.for_task(schema, cfg.task)

    if cfg.data.chunk_rows > 0:
        if max_rows is not None:
            raise ValueError("max_rows cannot be combined with streaming (data.chunk_rows > 0)")
        assert dataset.files is not None
        side_tables = {
            name: read_columns(path, schema) for name, path in dataset.files.side_tables.items()
        }
        train: EncodedSplit | StreamingSplit = StreamingSplit(
            dataset.files.splits["train"],
            schema,
            dataset.encoder,
            task=cfg.task,
            chunk_rows=cfg.data.chunk_rows,
            name="train",
            side_tables=side_tables,
        )
    else:
        train = split("train")  # type: ignore[assignment]
    valid, test = split("valid"), split("test")
    if len(train) == 0:
        raise TrainingError(f"task {cfg.task!r}: the training split has no rows")
    return PreparedData(dataset, cfg.task, label, train, valid, test, Path(data_dir))


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


# --------------------------------------------------------------------------- building blocks


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model(cfg: RunConfig, data: PreparedData) -> tuple[JointModel, JointModelArgs]:
    """The joint model of a run (fresh initialisation from the current torch RNG)."""
    args = model_args(cfg, data.dataset.schema, data.dataset.encoder.cardinality)
    return JointModel(args), args


def build_optimizers(model: JointModel, cfg: RunConfig) -> dict[str, torch.optim.Optimizer]:
    """``{"sparse": tables, "dense": the rest}`` over trainable parameters.

    With sparse gradients the tables use ``SparseAdam`` (moments updated only
    for the rows in the batch, no full-table pass per step); otherwise ``Adam``.
    Tables kept dense under ``model.sparse_min_rows`` join the dense optimiser
    as their own group (``lr_sparse``, no weight decay — AdamW without decay is
    Adam), so one fused kernel updates them with the nets' weights instead of a
    coalesce and row gathers per tiny table per step.
    Weight decay applies to dense parameters only: decaying every table row
    each step is exactly the full-table update sparse training avoids.
    """
    tables = [p for _, p in model.embedding_parameters() if p.requires_grad]
    sparse_ids = {id(p) for _, p in model.sparse_gradient_parameters()}
    sparse_tables = [p for p in tables if id(p) in sparse_ids]
    dense_tables = [p for p in tables if id(p) not in sparse_ids]
    dense = [p for _, p in model.dense_parameters() if p.requires_grad]
    opt = cfg.optim
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if not model.args.sparse:
        if tables:
            optimizers["sparse"] = torch.optim.Adam(tables, lr=opt.lr_sparse, foreach=True)
        dense_tables = []
    elif sparse_tables:
        optimizers["sparse"] = torch.optim.SparseAdam(sparse_tables, lr=opt.lr_sparse)
    groups: list[dict[str, Any]] = []
    if dense:
        groups.append({"params": dense, "lr": opt.lr_dense, "weight_decay": opt.weight_decay})
    if dense_tables:
        groups.append({"params": dense_tables, "lr": opt.lr_sparse, "weight_decay": 0.0})
    if groups:
        optimizers["dense"] = torch.optim.AdamW(groups, lr=opt.lr_dense, fused=True)
    return optimizers


def forward_for_loss(
    model: JointModel,
    features: Mapping[str, Tensor],
    variant: Variant,
    teacher: JointModel | None,
) -> JointOutput:
    """The outputs ``compute_loss`` needs for ``variant``.

    ``two_stage_kd`` takes the booster logit from the frozen ``teacher`` (no
    gradient) and never runs the student model's own booster.
    """
    feats = dict(features)
    if variant is Variant.TWO_STAGE_KD:
        if teacher is None:
            raise TrainingError(
                "variant two_stage_kd needs a pretrained booster: train booster_alone first "
                "and pass it as the teacher (rocketrank ablate does both)"
            )
        with torch.no_grad():
            teacher_logit = teacher.booster_logit(feats)
        out = model.forward_joint(feats, run_booster=False, run_light=True)
        return out._replace(booster_logit=teacher_logit)
    run_booster, run_light = nets_needed(variant)
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


@torch.inference_mode()
def predict(
    model: JointModel,
    split: EncodedSplit,
    batch_size: int,
    *,
    booster_source: JointModel | None = None,
) -> dict[str, np.ndarray]:
    """Light and booster logits over a split, in split order (eval mode).

    Args:
        model: the model whose light net is evaluated.
        split: an in-memory split.
        batch_size: rows per forward pass.
        booster_source: evaluate this model's booster instead (two-stage KD
            teacher); default ``model``'s own.

    Returns:
        ``{"light": float64 [N], "booster": float64 [N]}``.
    """
    booster_model = model if booster_source is None else booster_source
    was_training = model.training, booster_model.training
    model.eval()
    booster_model.eval()
    light, booster = [], []
    try:
        for batch in split.iter_batches(batch_size, shuffle=False):
            light.append(model(batch.features))
            booster.append(booster_model.booster_logit(batch.features))
    finally:
        model.train(was_training[0])
        booster_model.train(was_training[1])
    return {
        "light": torch.cat(light).double().numpy(),
        "booster": torch.cat(booster).double().numpy(),
    }


def evaluate_model(
    model: JointModel,
    split: EncodedSplit,
    label: str,
    batch_size: int,
    *,
    booster_source: JointModel | None = None,
    dist: DistContext = SINGLE_PROCESS,
) -> dict[str, dict[str, float]]:
    """``{"light": metrics, "booster": metrics}`` on one split (see ``training.evaluate``).

    With ``dist`` each process scores a slice and the metrics are those of the
    whole split (the union of every process's predictions).
    """
    logits = dist.all_predictions(predict, model, split, batch_size, booster_source=booster_source)
    labels = split.labels[label].double().numpy()
    users, groups = split.user.numpy(), split.group.numpy()
    return {net: evaluate_scores(labels, z, users, groups) for net, z in logits.items()}


def _improved(value: float, best: float | None, metric: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if metric == "auc" else value < best


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (they are re-done by the resumed run)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interruption
        if int(rec.get("step", 0)) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _state_copy(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
        dist: data-parallel context (``training.distributed``): every process
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
    if data.task != cfg.task:
        raise TrainingError(f"data was prepared for task {data.task!r}, config says {cfg.task!r}")
    dist.check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    epochs = options.epochs or cfg.optim.epochs
    variant = Variant(cfg.distill.variant)
    batch_size = cfg.data.batch_size
    steps_per_epoch = data.train.num_batches(batch_size)
    total_steps = epochs * steps_per_epoch
    settings = cfg.distill.settings(total_steps, steps_per_epoch)
    metric = options.early_stopping_metric
    # booster_alone distils nothing: early-stop on the booster it trains
    watched = "booster" if variant is Variant.BOOSTER_ALONE else "light"
    patience = cfg.optim.early_stopping_patience

    # --- model, optimisers, run files ---------------------------------------------------
    seed_everything(cfg.seed)
    model, args = build_model(cfg, data)
    model.train()
    if teacher is not None:
        teacher.eval()
        teacher.requires_grad_(False)
    optimizers = build_optimizers(model, cfg)
    dense_params = [p for _, p in model.dense_parameters() if p.requires_grad]
    config_record = {
        **cfg.to_dict(),
        "data_dir": str(data.data_dir) if data.data_dir else None,
        "label": data.label,
        "epochs_requested": epochs,
    }
    if dist.is_main:
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config_record, indent=2) + "\n")
        data.dataset.encoder.save(str(run_dir / ENCODER_FILE))

    position = Position()
    state: dict[str, Any] = {
        "best_value": None,
        "best_epoch": None,
        "bad_evals": 0,
        "stopped_early": False,
        "train_seconds": 0.0,
        "train_cpu_seconds": 0.0,
        "samples": 0,
    }
    log_path = run_dir / LOG_FILE
    if options.resume:
        ckpt_path = run_dir / CHECKPOINT_FILE
        try:
            ckpt = load_checkpoint(ckpt_path)
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume: {exc}") from exc
        if ckpt["model_args"] != args.to_dict():
            raise TrainingError(
                f"cannot resume {run_dir}: the checkpoint was trained with other model "
                "arguments (config or data changed)"
            )
        model.load_state_dict(ckpt["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        restore_rng(ckpt["rng"])
        position = Position.from_dict(ckpt["position"])
        state.update(ckpt["trainer"])
        if dist.is_main:
            _truncate_log(log_path, position.step)
        log.info("resumed %s at epoch %d batch %d step %d", run_dir, *position.to_dict().values())
    elif dist.is_main:
        # a fresh run never mixes with the outputs of an earlier one in the same directory
        for name in (LOG_FILE, CHECKPOINT_FILE, BEST_FILE, MODEL_FILE, METRICS_FILE, CURVES_FILE):
            (run_dir / name).unlink(missing_ok=True)

    def checkpoint(pos: Position) -> None:
        if not dist.is_main:
            return
        save_checkpoint(
            run_dir / CHECKPOINT_FILE,
            model=model,
            model_args=args.to_dict(),
            optimizers=optimizers,
            position=pos,
            trainer_state=state,
            config=cfg.to_dict(),
        )

    best_state: dict[str, Tensor] | None = None
    if state["best_epoch"] is not None and (run_dir / BEST_FILE).exists():
        best_state = load_checkpoint(run_dir / BEST_FILE)["model"]

    # --- training ---------------------------------------------------------------------
    step = position.step
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not options.progress or not dist.is_main,
        desc=f"{variant.value}",
        unit="step",
        dynamic_ncols=True,
    )
    interrupted = False
    with open(log_path if dist.is_main else os.devnull, "a") as log_file:
        for epoch in range(position.epoch, epochs):
            if state["stopped_early"]:
                break
            first = position.batch if epoch == position.epoch else 0
            batches = dist.shard_batches(
                data.train.iter_batches(batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)
            )
            tick, cpu_tick = time.perf_counter(), time.process_time()
            for index, batch in enumerate(itertools.islice(batches, first, None), start=first):
                out = forward_for_loss(model, batch.features, variant, teacher)
                terms = compute_loss(out, batch.labels[data.label], settings, step, batch.group)
                for opt in optimizers.values():
                    opt.zero_grad(set_to_none=True)
                terms.total.backward()
                # N processes: global-batch gradients and loss terms; one process: no-op
                terms, rows = dist.sync_step(model, terms, len(batch))
                check_finite(terms, variant, settings.hint, step, epoch)
                if cfg.optim.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(dense_params, cfg.optim.max_grad_norm)
                for opt in optimizers.values():
                    opt.step()
                step += 1
                state["samples"] += rows
                now = time.perf_counter()
                state["train_seconds"] += now - tick
                state["train_cpu_seconds"] += time.process_time() - cpu_tick

                if step % options.log_every == 0 or index == steps_per_epoch - 1:
                    losses = terms.as_dict()
                    record = {
                        "kind": "step",
                        "step": step,
                        "epoch": epoch,
                        "batch": index,
                        "lambda": losses.pop("lambda"),
                        "loss": {k: v for k, v in losses.items() if math.isfinite(v)},
                        "samples_per_second": state["samples"] / max(state["train_seconds"], 1e-9),
                    }
                    log_file.write(json.dumps(record) + "\n")
                    bar.set_postfix(
                        {k: f"{v:.4f}" for k, v in record["loss"].items()}, refresh=False
                    )
                bar.update(1)
                if options.checkpoint_every and step % options.checkpoint_every == 0:
                    log_file.flush()
                    checkpoint(Position(epoch, index + 1, step))
                if options.stop_after_steps is not None and step >= options.stop_after_steps:
                    log_file.flush()
                    position = Position(epoch, index + 1, step)
                    checkpoint(position)
                    interrupted = True
                    break
                # logging and checkpoints are not training time
                tick, cpu_tick = time.perf_counter(), time.process_time()
            if interrupted:
                break

            # epoch end: validation, early stopping, checkpoint
            if data.valid is not None and len(data.valid):
                scores = evaluate_model(
                    model,
                    data.valid,
                    data.label,
                    cfg.data.eval_batch_size,
                    booster_source=teacher,
                    dist=dist,
                )
                value = scores[watched][metric]
                if _improved(value, state["best_value"], metric):
                    state.update(best_value=value, best_epoch=epoch, bad_evals=0)
                    if patience > 0:
                        best_state = _state_copy(model)
                        if dist.is_main:
                            atomic_torch_save(
                                {"format": 1, "model": best_state}, run_dir / BEST_FILE
                            )
                else:
                    state["bad_evals"] += 1
                    if patience > 0 and state["bad_evals"] >= patience:
                        state["stopped_early"] = True
                log_file.write(
                    json.dumps(
                        json_safe(
                            {"kind": "eval", "split": "valid", "step": step, "epoch": epoch}
                            | scores
                        )
                    )
                    + "\n"
                )
                if dist.is_main:
                    bar.write(
                        f"epoch {epoch}: valid {watched} {metric} {value:.4f} "
                        f"(light auc {scores['light']['auc']:.4f}, "
                        f"booster auc {scores['booster']['auc']:.4f})"
                    )
            log_file.flush()
            position = Position(epoch + 1, 0, step)
            checkpoint(position)
    bar.close()

    if interrupted:
        return TrainResult(run_dir, {}, model, interrupted=True, position=position)

    # --- final evaluation and outputs -------------------------------------------------
    if patience > 0 and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    final_split, final_name = (
        (data.test, "test") if data.test is not None and len(data.test) else (data.valid, "valid")
    )
    if final_split is None:
        raise TrainingError("no test or validation split to evaluate on")
    final = evaluate_model(
        model, final_split, data.label, cfg.data.eval_batch_size, booster_source=teacher, dist=dist
    )
    sample = next(final_split.iter_batches(min(256, len(final_split)))).features
    cost = model.cost_report(sample)
    if teacher is not None:
        teacher_cost = teacher.cost_report(sample)
        cost["booster_params"] = teacher_cost["booster_params"]
        cost["booster_flops_per_candidate"] = teacher_cost["booster_flops_per_candidate"]
    metrics = {
        "variant": variant.value,
        "task": cfg.task,
        "split": final_name,
        "light": final["light"],
        "booster": final["booster"],
        "params": {"light": cost["light_params"], "booster": cost["booster_params"]},
        "flops_per_candidate": {
            "light": cost["light_flops_per_candidate"],
            "booster": cost["booster_flops_per_candidate"],
        },
        "light_serving_flops_per_candidate": cost["light_serving_flops_per_candidate"],
        "train_seconds": state["train_seconds"],
        # CPU time of the optimiser steps: with one thread, a cost measure that other
        # processes competing for the cores do not inflate the way they inflate wall time
        "train_cpu_seconds": state["train_cpu_seconds"],
        "samples_per_second": state["samples"] / max(state["train_seconds"], 1e-9),
        "steps": step,
        "epochs": epochs,
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "early_stopping": {"metric": f"valid {watched} {metric}", "best": state["best_value"]},
        "batch_size": batch_size,
        "train_rows": len(data.train),
    }
    if not dist.is_main:
        return TrainResult(run_dir, metrics, model, position=position)
    atomic_torch_save(
        {
            "format": 1,
            "model": model.state_dict(),
            "model_args": args.to_dict(),
            "task": cfg.task,
            "label": data.label,
            "variant": variant.value,
            "config": cfg.to_dict(),
        },
        run_dir / MODEL_FILE,
    )
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(json_safe(metrics), indent=2) + "\n")
    plot_learning_curves(_read_log(log_path), run_dir / CURVES_FILE)
    return TrainResult(run_dir, metrics, model, position=position)


def load_trained_model(run_dir: str | Path) -> JointModel:
    """Rebuild the model of a finished run from ``RUN/model.pt`` (``weights_only``)."""
    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise TrainingError(f"{path} does not exist (did the run finish?)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = JointModel(JointModelArgs.from_dict(blob["model_args"]))
    model.load_state_dict(blob["model"])
    return model.eval()


def with_variant(cfg: RunConfig, variant: Variant | str) -> RunConfig:
    """``cfg`` with another distillation variant, keeping hint settings that still apply.

    The config's hint, λ, schedule and temperature are kept for variants of the
    same family (Rocket: rocket, rocket_no_gradient_block; PFD: pfd, pfd_md);
    other variants use their own defaults (``training.distill.default_hint``).
    """
    from training.distill import PFD_VARIANTS, ROCKET_VARIANTS

    variant = Variant(variant)
    d = cfg.distill
    same_family = any(
        variant in fam and d.variant in fam for fam in (ROCKET_VARIANTS, PFD_VARIANTS)
    ) or (variant is d.variant)
    if same_family:
        distill = dataclasses.replace(d, variant=variant, gradient_block=None)
    else:
        distill = dataclasses.replace(
            d,
            variant=variant,
            hint=None,
            lam=None,
            schedule=type(d.schedule)("constant"),
            warmup_steps=0,
            gradient_block=None,
        )
    return dataclasses.replace(cfg, distill=distill)


__all__ = [
    "PreparedData",
    "TrainOptions",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingError",
    "build_model",
    "build_optimizers",
    "evaluate_model",
    "load_trained_model",
    "predict",
    "prepare_data",
    "train",
    "with_variant",
]

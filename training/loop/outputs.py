"""What a run writes: its step records as it trains, its results at the end.

Each step (every ``log_every``) appends a ``"kind": "step"`` record to
``RUN/metrics.jsonl`` (:func:`log_step`). At the end, :func:`final_metrics` is the
content of ``metrics.json`` (with :func:`model_cost`, :func:`teacher_record` and,
from :func:`calibrate`, the ``light_calibrated`` block), and :func:`write_outputs`
writes ``model.pt``, ``metrics.json`` and ``curves.png`` (``training.loop.run_files``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from models.provenance import json_safe
from training.calibration import fit_platt_pooled_rate
from training.data.dataset import EncodedSplit
from training.distill.losses import LossTerms
from training.evaluate import apply_platt, evaluate_scores, fit_platt
from training.loop.checkpoint import atomic_torch_save, atomic_write_text
from training.loop.evaluation import light_logits
from training.loop.run_context import Run
from training.loop.run_files import CURVES_FILE, METRICS_FILE, STATE_DICT_FILE, read_log
from training.plots import plot_learning_curves


def log_step(
    run: Run, terms: LossTerms, epoch: int, index: int, log_file: TextIO, bar: tqdm
) -> None:
    """Write the step record every ``log_every`` steps (and at epoch ends); advance the bar."""
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


def model_cost(run: Run, sample: Mapping[str, Tensor]) -> dict[str, Any]:
    """Parameters and FLOPs per candidate; a two-stage KD booster is the teacher's."""
    cost = run.model.cost_report(sample)
    if run.booster_source is not None:
        teacher_cost = run.booster_source.cost_report(sample)
        cost["booster_params"] = teacher_cost["booster_params"]
        cost["booster_flops_per_candidate"] = teacher_cost["booster_flops_per_candidate"]
    return cost


def final_metrics(
    run: Run, final: dict[str, dict[str, float]], split: str, cost: dict[str, Any]
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
        "teacher_stop": teacher_record(run),
        "batch_size": run.cfg.data.batch_size,
        "train_rows": len(run.data.train),
    }


def teacher_record(run: Run) -> dict[str, Any] | None:
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


def _in_memory_labels(train: Any, label: str) -> np.ndarray:
    """The training split's labels when it is in memory, else none (plain Platt).

    A streamed split would read its label, user and request columns for every row
    (and keep them), and a rank's shard holds only its own rows: both would break
    the streaming memory bound or the per-rank reading, for an intercept tweak.
    """
    if isinstance(train, EncodedSplit):
        return train.labels[label].numpy()
    return np.empty(0, dtype=np.float32)


def calibrate(run: Run, final_split: Any, final_name: str) -> dict[str, Any] | None:
    """Post-hoc calibration of the light logit fitted on valid, applied to the final split.

    Platt's slope is fitted on valid; the intercept is anchored to the label rate
    pooled over the train and valid labels when the two agree within sampling
    noise (``training.calibration.fit_platt_pooled_rate``: a validation split
    with few positives otherwise passes its own rate error on to every split).

    Returns ``metrics.json``'s ``light_calibrated`` block: the fitted ``a``, ``b``
    (calibrated probability ``σ(a·z + b)``), the ``base_rate`` it is anchored to,
    the final split's calibration ratio and logloss before and after (AUC is
    unchanged for ``a > 0``), and ``platt_valid``: plain Platt on valid, for
    comparison. None without a validation split.
    """
    valid = run.data.valid
    if valid is None or not len(valid):
        return None
    bs = run.cfg.data.eval_batch_size
    label = run.data.label
    z_valid = light_logits(run.model, valid, bs, dist=run.dist)
    y_valid = valid.labels[label].double().numpy()
    plain_a, plain_b = fit_platt(z_valid, y_valid)
    a, b, base = fit_platt_pooled_rate(z_valid, y_valid, _in_memory_labels(run.data.train, label))
    z = light_logits(run.model, final_split, bs, dist=run.dist)
    y = final_split.labels[label].double().numpy()
    users, groups = final_split.user.numpy(), final_split.group.numpy()
    before = evaluate_scores(y, z, users, groups)
    after = evaluate_scores(y, apply_platt(z, a, b), users, groups)
    plain = evaluate_scores(y, apply_platt(z, plain_a, plain_b), users, groups)
    keys = ("calibration", "logloss", "auc")
    return {
        "a": a,
        "b": b,
        "fitted_on": "valid",
        "method": "platt_pooled_rate" if base.pooled else "platt",
        "base_rate": base.to_dict(),
        "split": final_name,
        "before": {k: before[k] for k in keys},
        "after": {k: after[k] for k in keys},
        "platt_valid": {"a": plain_a, "b": plain_b} | {k: plain[k] for k in keys},
    }


def write_outputs(run: Run, metrics: dict[str, Any]) -> None:
    """Write ``model.pt`` (state dict and how to rebuild it), ``metrics.json``, ``curves.png``."""
    cfg, data = run.cfg, run.data
    atomic_torch_save(
        {
            "format": 1,
            "model": run.model.state_dict(),
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


__all__ = [
    "calibrate",
    "final_metrics",
    "log_step",
    "model_cost",
    "teacher_record",
    "write_outputs",
]

"""Scoring a split with a joint model: logits in split order, and their metrics.

With a ``DistContext`` each process scores a slice and the metrics are those of
the whole split (``training.loop.distributed``).
"""

from __future__ import annotations

import numpy as np
import torch

from models.joint import JointModel
from training.data.dataset import EncodedSplit
from training.evaluate import evaluate_scores
from training.loop.distributed import SINGLE_PROCESS, DistContext


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


@torch.inference_mode()
def _light_only(model: JointModel, split: EncodedSplit, batch_size: int) -> dict[str, np.ndarray]:
    was_training = model.training
    model.eval()
    try:
        out = [model(b.features) for b in split.iter_batches(batch_size, shuffle=False)]
    finally:
        model.train(was_training)
    return {"light": torch.cat(out).double().numpy()}


def light_logits(
    model: JointModel,
    split: EncodedSplit,
    batch_size: int,
    *,
    dist: DistContext = SINGLE_PROCESS,
) -> np.ndarray:
    """The light net's logits over a split, in split order: ``float64 [N]`` (no booster)."""
    return dist.all_predictions(_light_only, model, split, batch_size)["light"]


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


__all__ = ["evaluate_model", "light_logits", "predict"]

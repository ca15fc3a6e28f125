"""The representable teacher: what a (user, item) student could learn from the booster.

The booster reads privileged features the light net never sees: the position
(known only after ranking) and user×item interacted features whose realised
value changes from day to day. Part of the booster's edge is therefore out of
reach of any function of (user, item), and "gap closed against the booster"
cannot reach 100% by construction. The *representable teacher* is the booster
scored with

* the position fixed at one reference value for every row (PAL-style
  debiasing), and
* each privileged cross feature replaced by its train-time mean for the row's
  (user, item-side key) pair -- ``user_cat_*`` by (user, ``category_id``),
  ``user_shop_*`` by (user, ``shop_id``), other features by (user, item id) --
  or by the global train mean when train never showed the pair.

What is left is a function of (user, item) (and the served context), so the
gap to it is one the student could in principle close::

    logits = representable_teacher_on(model, data, "test")   # data: PreparedData
    rep_auc = auc(data.test.labels[data.label].numpy(), logits)
    gap_closed_against(light_auc, light_alone_auc, rep_auc)

Means are taken over the *encoded* values (what the booster reads), so for a
``log1p_standardize`` count the mean is that of the log counts. Keys are encoded
codes too: ids that map to OOV (rare or unseen) share one key per user.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from models.contract.feature_spec import Side
from models.contract.features import FeatureEncoder
from training.data.dataset import Batch
from training.data.prepare import PreparedData
from training.evaluate import gap_closed


class Teacher(Protocol):
    """What the representable teacher needs of a model (``JointModel`` has it)."""

    privileged: list[str]
    training: bool

    def booster_logit(self, features: dict[str, Tensor]) -> Tensor: ...

    def train(self, mode: bool = True) -> Any: ...


class Split(Protocol):
    """An encoded split: ``EncodedSplit`` (in memory) or ``StreamingSplit`` (train only)."""

    def iter_batches(self, batch_size: int, shuffle: bool = False) -> Iterable[Batch]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class RepresentableSpec:
    """How the booster's privileged inputs are made (user, item)-representable.

    Attributes:
        position: the position feature, fixed at ``reference_position`` (None:
            the log has none; a name the model does not read is ignored).
        reference_position: raw position value, encoded with the encoder's own
            ``encode_column``; None = the most frequent encoded value on train
            (ties: the smallest code; on the synthetic log that is position 1).
        pair_keys: cross feature → the item-side feature that keys its pair
            mean, overriding :func:`default_pair_key`.
        features: the cross features to replace; None = every privileged
            ``side: cross`` feature the model reads.
    """

    position: str | None = "position"
    reference_position: Any = None
    pair_keys: Mapping[str, str] = field(default_factory=dict)
    features: tuple[str, ...] | None = None


def default_pair_key(name: str, item_features: Sequence[str], item_id: str | None) -> str:
    """The item-side feature that keys a cross feature's pair mean, from its name.

    ``user_<token>_...`` takes the item feature ``<token>_id``, ``<token>`` or the
    first one starting with ``<token>`` (``user_cat_clicks_7d`` → ``category_id``,
    ``user_shop_clicks_30d`` → ``shop_id``); anything else takes the item id.

    Raises:
        ValueError: no key found (pass it in ``RepresentableSpec.pair_keys``).
    """
    parts = name.split("_")
    if len(parts) > 1 and parts[0] == "user":
        token = parts[1]
        for candidate in (f"{token}_id", token):
            if candidate in item_features:
                return candidate
        for feature in item_features:
            if feature.startswith(token):
                return feature
    if item_id is not None and item_id in item_features:
        return item_id
    raise ValueError(
        f"cross feature {name!r}: no item-side key found among {list(item_features)}; "
        "name one in RepresentableSpec.pair_keys"
    )


def reference_code(encoder: FeatureEncoder, name: str, value: Any, train_codes: Tensor) -> Tensor:
    """The encoded reference value of ``name``: ``value`` encoded, or the train mode.

    Returns:
        A 0-dim tensor with the dtype of ``train_codes``.
    """
    if value is not None:
        code = encoder.encode_column(name, np.asarray([value]))[0]
        return torch.tensor(code, dtype=train_codes.dtype)
    values, counts = torch.unique(train_codes, return_counts=True)  # sorted: ties → smallest
    return values[torch.argmax(counts)].clone()


def pair_means(
    train_user: np.ndarray,
    train_key: np.ndarray,
    train_values: np.ndarray,
    user: np.ndarray,
    key: np.ndarray,
) -> np.ndarray:
    """Mean of ``train_values`` per (user, key) pair, looked up for each (``user``, ``key``).

    Args:
        train_user, train_key, train_values: ``[M]`` train rows.
        user, key: ``[N]`` rows to look up.

    Returns:
        float64 ``[N]``; the global train mean where train has no row of the pair.
    """
    fallback = float(np.mean(train_values, dtype=np.float64)) if len(train_values) else 0.0
    means = (
        pd.DataFrame({"u": train_user, "k": train_key, "v": train_values.astype(np.float64)})
        .groupby(["u", "k"], sort=False)["v"]
        .mean()
    )
    looked_up = means.reindex(pd.MultiIndex.from_arrays([user, key]))
    return looked_up.fillna(fallback).to_numpy(dtype=np.float64)


def _columns(split: Split, names: Sequence[str], batch_size: int) -> tuple[Tensor, dict]:
    """(user ids ``[N]``, {name: column ``[N]``}) of a split, without copying an in-memory one."""
    if hasattr(split, "features"):  # EncodedSplit
        return split.user, {n: split.features[n] for n in names}  # type: ignore[attr-defined]
    users, cols = [], {n: [] for n in names}
    for batch in split.iter_batches(batch_size, shuffle=False):
        users.append(batch.user)
        for n in names:
            cols[n].append(batch.features[n])
    return torch.cat(users), {n: torch.cat(v) for n, v in cols.items()}


def representable_features(
    split: Split,
    train: Split,
    encoder: FeatureEncoder,
    privileged: Sequence[str],
    *,
    spec: RepresentableSpec = RepresentableSpec(),
    item_id: str | None = None,
    batch_size: int = 65_536,
) -> dict[str, Tensor]:
    """The split's encoded features with the representable replacements; ``split`` is untouched.

    Args:
        split: the split to score (``EncodedSplit``).
        train: the training split the pair means come from.
        encoder: the fitted encoder (feature sides and types; position encoding).
        privileged: the privileged features the model reads.
        spec: what to replace and how (see :class:`RepresentableSpec`).
        item_id: the item id feature (``schema.ids.item``), the default key.
        batch_size: rows per chunk when ``train`` is streamed.

    Returns:
        A new ``{name: tensor [N]}`` (unchanged features are the split's own tensors):
        the position filled with the reference code, each replaced cross
        feature float32 ``[N]`` of pair means.

    Raises:
        ValueError: a replaced feature is not a dense numeric, or has no key.
    """
    features: dict[str, Tensor] = dict(split.features)  # type: ignore[attr-defined]
    item_features = [n for n, s in encoder.specs.items() if s.side is Side.ITEM]
    if spec.features is None:
        replaced = [n for n in privileged if encoder.specs[n].side is Side.CROSS]
    else:
        replaced = list(spec.features)
    keys = {
        n: spec.pair_keys.get(n) or default_pair_key(n, item_features, item_id) for n in replaced
    }
    for name in replaced:
        if encoder.specs[name].is_sparse:
            raise ValueError(
                f"cross feature {name!r} is encoded as a code: a pair mean needs a dense numeric"
            )
    position = spec.position if spec.position in privileged else None
    needed = sorted({*replaced, *keys.values(), *([position] if position else [])})
    train_user, train_cols = _columns(train, needed, batch_size)
    user = split.user.numpy()  # type: ignore[attr-defined]
    for name in replaced:
        key = keys[name]
        means = pair_means(
            train_user.numpy(),
            train_cols[key].numpy(),
            train_cols[name].numpy(),
            user,
            features[key].numpy(),
        )
        features[name] = torch.from_numpy(means.astype(np.float32))
    if position is not None:
        code = reference_code(encoder, position, spec.reference_position, train_cols[position])
        features[position] = torch.full_like(features[position], int(code))
    return features


@torch.inference_mode()
def representable_teacher_logits(
    model: Teacher,
    split: Split,
    train: Split,
    encoder: FeatureEncoder,
    *,
    spec: RepresentableSpec = RepresentableSpec(),
    item_id: str | None = None,
    batch_size: int = 8_192,
) -> np.ndarray:
    """Booster logits of the representable teacher over ``split``, in split order.

    Args:
        model: the trained joint model (its booster is scored, in eval mode;
            the mode is restored afterwards).
        split: the split to score, e.g. ``PreparedData.test`` (in memory).
        train: ``PreparedData.train`` (in memory or streamed): the pair means.
        encoder: ``PreparedData.dataset.encoder``.
        spec: see :class:`RepresentableSpec`.
        item_id: ``PreparedData.dataset.schema.ids.item`` (the fallback pair key).
        batch_size: rows per forward pass.

    Returns:
        float64 ``[N]`` logits.
    """
    features = representable_features(
        split, train, encoder, model.privileged, spec=spec, item_id=item_id
    )
    return booster_logits_on(model, features, len(split), batch_size)


@torch.inference_mode()
def booster_logits_on(
    model: Teacher, features: Mapping[str, Tensor], n: int, batch_size: int = 8_192
) -> np.ndarray:
    """Booster logits of ``model`` over ``n`` rows of ``features``, in eval mode.

    Args:
        model: a joint model (the mode is restored afterwards).
        features: ``{name: tensor [n]}``, e.g. from :func:`representable_features`
            (computed once, reused for every run of an ablation).
        n: the number of rows.
        batch_size: rows per forward pass.

    Returns:
        float64 ``[n]`` logits.
    """
    was_training = model.training
    model.train(False)
    try:
        out = [
            model.booster_logit({k: v[s : s + batch_size] for k, v in features.items()})
            for s in range(0, n, batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def representable_teacher_on(
    model: Teacher,
    data: PreparedData,
    split: str = "test",
    *,
    spec: RepresentableSpec = RepresentableSpec(),
    batch_size: int = 8_192,
) -> np.ndarray:
    """:func:`representable_teacher_logits` on ``data.test`` (or ``"valid"``) of a prepared run.

    Raises:
        ValueError: the prepared data has no such split.
    """
    target = {"test": data.test, "valid": data.valid}.get(split)
    if target is None:
        raise ValueError(f"no {split!r} split to score (prepared splits: test, valid)")
    return representable_teacher_logits(
        model,
        target,
        data.train,
        data.dataset.encoder,
        spec=spec,
        item_id=data.dataset.schema.ids.item,
        batch_size=batch_size,
    )


def gap_closed_against(
    light_auc: float, light_alone_auc: float, teacher_auc: float
) -> float | None:
    """Fraction of the gap from light_alone to a teacher that a distilled light net closes.

    ``(light − light_alone) / (teacher − light_alone)``; None when the teacher
    is not above light_alone (no gap to close) or an input is not finite.
    Pass the booster's AUC for the usual figure, the representable teacher's
    for the share of what a (user, item) student could learn.
    """
    values = (light_auc, light_alone_auc, teacher_auc)
    if not all(math.isfinite(v) for v in values) or teacher_auc <= light_alone_auc:
        return None
    return gap_closed(light_auc, light_alone_auc, teacher_auc)


__all__ = [
    "RepresentableSpec",
    "booster_logits_on",
    "default_pair_key",
    "gap_closed_against",
    "pair_means",
    "reference_code",
    "representable_features",
    "representable_teacher_logits",
    "representable_teacher_on",
]

"""Negative sampling for logs that hold only positives (ratings, purchases).

For every positive row, ``n_neg`` negatives are drawn uniformly from the item
catalogue. A negative copies the positive row's user, context and request
columns, takes the item id and item-side features from the catalogue, sets
every label to 0, and leaves cross (user×item) features missing, because the
positive's values describe a different item (copying them would leak the
label).

Sampling excludes the user's own positives: colliding draws are redrawn (a
few vectorised rounds). Draws still colliding after ``max_rounds`` (a user
whose positives cover almost the whole catalogue) are dropped, so such a user
may get fewer negatives; :func:`sample_negatives` logs how many.

Ranking metrics group by ``ids.request`` when the log has it; sampled logs
usually do not, and the split's ``group`` then falls back to the user id
(see :func:`training.data.dataset.encode_columns`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from models.contract.feature_spec import Side
from training.data.schema import Schema

log = logging.getLogger(__name__)


def item_catalogue(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Items seen in a log with their item-side features (last occurrence wins)."""
    item = schema.ids.item
    cols = [item] + [
        f.name for f in schema.features if f.side is Side.ITEM and f.name in df and f.name != item
    ]
    return df[cols].drop_duplicates(subset=item, keep="last").reset_index(drop=True)


def _missing_value(values: pd.Series) -> Any:
    return np.nan if pd.api.types.is_numeric_dtype(values.dtype) else None


def _redraw_collisions(
    rng: np.random.Generator,
    df: pd.DataFrame,
    catalogue: pd.DataFrame,
    schema: Schema,
    owner: np.ndarray,
    draws: np.ndarray,
    max_rounds: int,
) -> np.ndarray:
    """Redraw (in place) negatives that are one of their user's positives.

    Returns:
        bool ``[len(owner)]``: the draws to keep (False = still colliding after
        ``max_rounds`` redraws).
    """
    user, item = schema.ids.user, schema.ids.item
    n_items = len(catalogue)
    item_ids = catalogue[item].to_numpy(dtype=np.int64)
    user_codes, _ = pd.factorize(df[user], sort=False)
    user_codes = user_codes.astype(np.int64)
    pos_items = pd.Index(item_ids).get_indexer(df[item].to_numpy(dtype=np.int64))
    # (user code, catalogue position) packed into one int64 key per pair
    pos_keys = np.unique(user_codes[pos_items >= 0] * n_items + pos_items[pos_items >= 0])
    draw_users = user_codes[owner]
    collide = np.isin(draw_users * n_items + draws, pos_keys)
    for _ in range(max_rounds):
        if not collide.any():
            break
        redo = np.flatnonzero(collide)
        draws[redo] = rng.integers(0, n_items, size=len(redo))
        collide[redo] = np.isin(draw_users[redo] * n_items + draws[redo], pos_keys)
    keep = ~collide
    if not keep.all():
        log.info("dropped %d negatives colliding with users' positives", int((~keep).sum()))
    return keep


def sample_negatives(
    df: pd.DataFrame,
    schema: Schema,
    items_df: pd.DataFrame | None,
    n_neg: int,
    seed: int,
    *,
    exclude_positives: bool = True,
    max_rounds: int = 10,
) -> pd.DataFrame:
    """Add ``n_neg`` sampled negatives per positive row.

    Args:
        df: positive rows; holds the schema's id and feature columns. Label
            columns it lacks are added (1 for positives).
        schema: the log schema.
        items_df: the item catalogue (item id + item-side feature columns), e.g.
            ``items.parquet``; ``None`` derives it from ``df``.
        n_neg: negatives per positive (>= 0).
        seed: sampling seed; the output is a function of (df, items_df, n_neg, seed).
        exclude_positives: redraw negatives that are one of the user's positives.
        max_rounds: redraw rounds before colliding draws are dropped.

    Returns:
        A new frame: each positive row followed by its negatives, with the
        columns of ``df``; negatives have every label 0.

    Raises:
        ValueError: ``n_neg < 0``, an empty catalogue, or missing id columns.
    """
    if n_neg < 0:
        raise ValueError(f"n_neg must be >= 0, got {n_neg}")
    user, item = schema.ids.user, schema.ids.item
    for col in (user, item):
        if col not in df:
            raise ValueError(f"positives lack the id column {col!r}")
    catalogue = item_catalogue(df, schema) if items_df is None else items_df
    if item not in catalogue:
        raise ValueError(f"item catalogue lacks the item id column {item!r}")
    catalogue = catalogue.drop_duplicates(subset=item, keep="last").reset_index(drop=True)
    if len(catalogue) == 0:
        raise ValueError("item catalogue is empty")

    label_cols = [lab.column for lab in schema.labels.values()]
    df = df.assign(**{c: np.ones(len(df), dtype=np.int64) for c in label_cols if c not in df})

    rng = np.random.default_rng(seed)
    n_pos, n_items = len(df), len(catalogue)
    owner = np.repeat(np.arange(n_pos, dtype=np.int64), n_neg)
    draws = rng.integers(0, n_items, size=len(owner))
    keep = np.ones(len(owner), dtype=bool)
    if exclude_positives and len(owner):
        keep = _redraw_collisions(rng, df, catalogue, schema, owner, draws, max_rounds)
    owner, draws = owner[keep], draws[keep]

    negatives = df.iloc[owner].reset_index(drop=True).copy()
    item_cols = [c for c in catalogue.columns if c in negatives.columns]
    sampled = catalogue.iloc[draws].reset_index(drop=True)
    for col in item_cols:
        negatives[col] = sampled[col].to_numpy()
    for f in schema.features:
        if f.side is Side.CROSS and f.name in negatives and f.name not in item_cols:
            negatives[f.name] = _missing_value(negatives[f.name])
    for col in label_cols:
        negatives[col] = np.zeros(len(negatives), dtype=df[col].dtype)

    positives = df.reset_index(drop=True)
    out = pd.concat([positives, negatives], ignore_index=True)
    # each positive, then its negatives: keeps a user's rows together for chunked shuffling
    rank = np.concatenate([np.arange(n_pos, dtype=np.int64), owner])
    is_negative = np.concatenate([np.zeros(n_pos, dtype=np.int64), np.ones(len(owner), np.int64)])
    order = np.lexsort((is_negative, rank))
    return out.iloc[order].reset_index(drop=True)


__all__ = ["item_catalogue", "sample_negatives"]

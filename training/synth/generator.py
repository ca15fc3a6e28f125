"""A synthetic e-commerce impression log whose click and conversion model is known.

The log imitates a feed: users with demographic features, items in categories,
shops and brands with prices and tags, and requests (a user, an hour, a device)
that each show a page of ``page_size`` items at positions ``1..page_size``.
Clicks and conversions are drawn from a documented model (``CLICK`` and
``CONVERSION`` below, explained in ``docs/SYNTHETIC.md``), and the true
probabilities are stored next to the labels, so every trained model can be
compared with the ceiling (the oracle AUC in ``stats.json``).

How the truth is built, in one paragraph: every user and item has a latent
vector (``LATENT_DIM``); part of it follows from observable features
(demographics; category, shop, brand, tags) and the rest is idiosyncratic, so
ids carry signal of their own. The standardised dot product (the affinity) is
the largest term of the click logit. A simulated click history (background
traffic the log does not show, plus the log's own clicks) gives the user×item
interacted features -- the user's clicks on the item's category in 7 days and
on its shop in 30 days, days since the last click on the shop -- computed
by a daily batch job as of the end of the previous day. The history follows the
user's interests (affinity plus a per user×category taste the latent vectors do
not know, plus a few favourite shops), and the realised counts enter the click
logit with their own coefficients. Position bias is strong and the page order
itself comes from a noisy previous ranker, as in a real log. Conversions on
clicked rows are driven by a purchase intent that shows in post-click
behaviour (dwell time, reviews viewed, chat with the seller, add to cart).

That paragraph is the default ``feed`` world. Its parameters, and those of
the other worlds (``interests``: best of several interests instead of a dot
product, a dominant per (user, category) taste, weaker position bias, a heavier
item tail, users who join late), are typed data in :mod:`training.synth.worlds`;
``world="interests"`` selects one.

Everything is vectorised numpy; the only Python loop runs over days (the
daily feature job), and the output is a deterministic function of the
arguments.

This module runs the story in its seeded order and writes the files; the parts
live next to it: the population in :mod:`~training.synth.world`,
:mod:`~training.synth.catalogue`, :mod:`~training.synth.tastes` and
:mod:`~training.synth.history`; the requests and pages in
:mod:`~training.synth.impressions`; clicks and conversions in
:mod:`~training.synth.labels`; the columns and ``schema.yaml`` in
:mod:`~training.synth.log_schema`; ``stats.json`` in :mod:`~training.synth.stats`;
sizes, splits and row groups in :mod:`~training.synth.config`.

Usage::

    frames = generate(rows=200_000, seed=1)       # dict of DataFrames
    stats = write("data/", rows=200_000, seed=1)  # Parquet + schema.yaml + stats.json
    frames = generate(rows=200_000, seed=1, world="interests")
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.schema import Schema, load_schema
from training.synth import config
from training.synth.catalogue import make_items
from training.synth.config import (
    LOG_START,
    SPLIT_FRACTIONS,
    SPLITS,
    SynthConfig,
    SynthConfigError,
    join_seconds,
)
from training.synth.history import background_history, history_indexes
from training.synth.impressions import Impressions, make_impressions
from training.synth.labels import LOGIT_TERMS, post_click, sigmoid, simulate_clicks
from training.synth.log_schema import ITEM_FEATURES, POST_CLICK_FEATURES, USER_FEATURES, schema_yaml
from training.synth.stats import compute_stats
from training.synth.tastes import ItemPicker, make_tastes
from training.synth.world import DEVICES, make_users
from training.synth.worlds import DEFAULT_WORLD, FEED, ClickModel, ConversionModel

CLICK: ClickModel = FEED.click
"""The click model of the default ``feed`` world (each world has its own: ``WORLDS``)."""
CONVERSION: ConversionModel = FEED.conversion


def generate(
    rows: int,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    page_size: int = 10,
    days: int = 14,
    world: str = DEFAULT_WORLD,
) -> dict[str, pd.DataFrame]:
    """Generate the log in memory.

    Args:
        rows: impressions (all splits together).
        seed: RNG seed; same arguments give identical frames.
        users, items: population sizes (default: scaled with ``sqrt(rows)``).
        page_size: items per request (positions ``1..page_size``).
        days: days covered by the log.
        world: the data-generating world (``training.synth.worlds.WORLDS``).

    Returns:
        ``{"train", "valid", "test"}``: impression rows split 80/10/10 by request
        time, each with ids, ``ts``, every feature, ``click``, ``conversion``,
        ``p_click`` and ``p_conversion``; ``"users"`` keyed by ``user_id`` and
        ``"items"`` keyed by ``item_id`` (``tags`` is a list<int64> column).

    Raises:
        SynthConfigError: an argument is out of range.
    """
    cfg = SynthConfig(rows, seed, users, items, page_size, days, world)
    frames, _ = _generate(cfg)
    return frames


def _generate(cfg: SynthConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The frames of :func:`generate` and the click-logit terms per row (diagnostics)."""
    spec, click = cfg.spec, cfg.spec.click
    rng = np.random.default_rng(cfg.seed)
    users = make_users(rng, cfg.n_users, spec)
    user_bias = click.user_bias_std * rng.normal(size=cfg.n_users)
    items = make_items(rng, cfg.n_items, spec)
    tastes = make_tastes(rng, users, items, spec)
    picker = ItemPicker(items, tastes)
    bg = background_history(rng, cfg.days, users, items, picker)
    if users.is_new is not None:  # a new user has no history before joining
        bg_user, _, bg_t = bg
        keep = ~users.is_new[bg_user] | (bg_t >= join_seconds(cfg))
        bg = tuple(part[keep] for part in bg)
    background = history_indexes(*bg, items, cfg.days)

    imp = make_impressions(rng, cfg, users, items, picker)
    user, item = imp.user, imp.item
    over_budget = np.maximum(items.price_level[item] - users.purchasing_level[user], 0.0)
    terms = {
        "affinity": click.affinity * imp.affinity,
        "position": click.log_position * np.log(imp.position),
        "context": click.hour_amplitude * np.cos(2 * np.pi * (imp.hour - 21) / 24)
        + np.asarray(click.device)[imp.device],
        "user_item_bias": user_bias[user]
        + click.item_quality * items.quality[item]
        + click.price_over_budget * over_budget,
        # adds exact zeros in a world without it, so the feed world's sums are unchanged
        "taste": click.category_taste * tastes.taste[user, items.category[item]],
        "interacted": np.zeros(len(user)),
    }
    clicked_rows, interacted = simulate_clicks(rng, cfg, imp, items, background, terms)
    p_click = sigmoid(click.intercept + sum(terms.values()))

    clicked = np.flatnonzero(clicked_rows)
    post_clicked, p_conv_clicked = post_click(
        rng,
        imp.affinity[clicked],
        items.quality[item[clicked]],
        over_budget[clicked],
        spec.conversion,
    )
    converted = rng.random(len(clicked)) < p_conv_clicked

    def on_clicked(values: np.ndarray) -> np.ndarray:
        # unclicked rows: 0 (the behaviour never happened, conversion impossible)
        full = np.zeros(len(user), dtype=values.dtype)
        full[clicked] = values
        return full

    log = pd.DataFrame(
        {
            "request_id": imp.request_id[imp.request],
            "ts": imp.t + LOG_START,
            "user_id": users.ids[user],
            "item_id": items.ids[item],
            "position": imp.position,
            "hour": imp.hour,
            "device": pd.array(np.asarray(DEVICES)[imp.device], dtype=str),
            **{name: users.frame[name].to_numpy()[user] for name in USER_FEATURES},
            **{name: items.frame[name].to_numpy()[item] for name in ITEM_FEATURES[:-1]},
            "tags": pd.arrays.ArrowExtensionArray(items.tags.take(pa.array(item))),
            **interacted,
            **{name: on_clicked(post_clicked[name]) for name in POST_CLICK_FEATURES},
            "click": clicked_rows.astype(np.int64),
            "conversion": on_clicked(converted.astype(np.int64)),
            "p_click": p_click,
            "p_conversion": on_clicked(p_conv_clicked),
        }
    )
    frames = dict(zip(SPLITS, _split_by_request_time(log, imp)))
    frames["users"] = users.frame
    frames["items"] = items.frame
    return frames, pd.DataFrame(terms)[LOGIT_TERMS]


def _split_by_request_time(log: pd.DataFrame, imp: Impressions) -> list[pd.DataFrame]:
    cuts = np.cumsum(SPLIT_FRACTIONS)[:-1]
    req_bounds = [0, *(round(float(c) * imp.n_requests) for c in cuts), imp.n_requests]
    row_bounds = np.searchsorted(imp.request, req_bounds)
    return [log.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(row_bounds)]


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    # No pandas metadata: readers then see plain Arrow types (list<int64> tags), and a
    # pandas dtype string stored in the file cannot break a reader of another version.
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, row_group_size=config.ROW_GROUP_ROWS)


def write(
    out_dir: str | Path,
    rows: int,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    page_size: int = 10,
    days: int = 14,
    world: str = DEFAULT_WORLD,
) -> dict[str, Any]:
    """Generate the log and write it to ``out_dir``.

    Arguments as for :func:`generate`.

    Writes ``train/valid/test.parquet`` (row groups of ``ROW_GROUP_ROWS``),
    ``users.parquet``, ``items.parquet``, ``schema.yaml`` and ``stats.json``.

    Returns:
        The content of ``stats.json``.

    Raises:
        SynthConfigError: an argument is out of range, or ``out_dir`` is a file.
    """
    started = time.perf_counter()
    cfg = SynthConfig(rows, seed, users, items, page_size, days, world)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SynthConfigError(f"out_dir {str(out)!r} exists and is not a directory")
    frames, parts = _generate(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SPLITS, "users", "items"):
        _write_parquet(frames[name], out / f"{name}.parquet")
    schema_path = out / "schema.yaml"
    schema_path.write_text(schema_yaml())
    schema: Schema = load_schema(schema_path)  # fail here, not in the trainer
    missing = sorted(set(schema.required_columns()) - set(frames["train"].columns))
    if missing:
        raise AssertionError(f"generated log lacks schema columns {missing}")
    stats = compute_stats(frames, cfg, parts)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


__all__ = ["CLICK", "CONVERSION", "generate", "write"]

"""The rows of the log before labels: requests, their pages and the page order.

Users open the feed at an hour and on a device (:func:`make_impressions`), the
retrieval channels fill each page without repeats, and a noisy previous ranker
orders it, as in a real log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.catalogue import Items
from training.synth.config import SynthConfig, join_seconds
from training.synth.sampling import unique_ids
from training.synth.tastes import ItemPicker
from training.synth.world import DEVICES, SECONDS_PER_DAY, Users, user_item_affinity


@dataclass
class Impressions:
    """Rows of the log before labels: indices into the world, in request-time order."""

    n_requests: int
    request: np.ndarray  # int64 [N] request index (0 = earliest)
    request_id: np.ndarray  # int64 [R]
    user: np.ndarray  # int64 [N] user index
    item: np.ndarray  # int64 [N] item index
    position: np.ndarray  # int64 [N] 1..page_size
    t: np.ndarray  # int64 [N] seconds since LOG_START
    hour: np.ndarray  # int64 [N]
    device: np.ndarray  # int64 [N] index into DEVICES
    affinity: np.ndarray  # float64 [N] latent user·item affinity


def _requests(rng: np.random.Generator, cfg: SynthConfig, users: Users) -> dict:
    """Who opens the feed when, on which device; sorted by time."""
    n_req = -(-cfg.rows // cfg.page_size)
    weight = users.request_weight / users.request_weight.sum()
    user = rng.choice(len(users.ids), size=n_req, p=weight)
    hour_weight = 1.0 + 0.8 * np.cos(2 * np.pi * (np.arange(24) - 21) / 24)
    hour = rng.choice(24, size=n_req, p=hour_weight / hour_weight.sum())
    day = rng.integers(0, cfg.days, n_req)
    t = day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n_req)
    if users.is_new is not None:  # a new user's requests before they join go to an old user
        early = users.is_new[user] & (t < join_seconds(cfg))
        old_weight = np.where(users.is_new, 0.0, weight)
        user[early] = rng.choice(
            len(users.ids), size=int(early.sum()), p=old_weight / old_weight.sum()
        )
    usual = rng.random(n_req) < 0.85
    device = np.where(usual, users.device[user], rng.integers(0, len(DEVICES), n_req))
    order = np.argsort(t, kind="stable")
    return {
        "id": unique_ids(rng, n_req, 10**11, 10**12),
        "user": user[order],
        "t": t[order],
        "hour": hour[order],
        "device": device[order],
    }


def _fill_pages(
    rng: np.random.Generator, req_user: np.ndarray, page: int, picker: ItemPicker
) -> np.ndarray:
    """Items shown per request, int64 [R, page], without repeats inside a page."""
    shown = picker.mixed(np.repeat(req_user, page), rng).reshape(-1, page)
    for _ in range(5):
        order = np.argsort(shown, axis=1, kind="stable")
        sorted_items = np.take_along_axis(shown, order, axis=1)
        dup_sorted = np.zeros_like(shown, dtype=bool)
        dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
        if not dup_sorted.any():
            break
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        shown[dup] = picker.from_popular(int(dup.sum()), rng)
    return shown


def make_impressions(
    rng: np.random.Generator,
    cfg: SynthConfig,
    users: Users,
    items: Items,
    picker: ItemPicker,
) -> Impressions:
    """Requests, their pages, and the page order a noisy previous ranker chose."""
    req = _requests(rng, cfg, users)
    P, n_req = cfg.page_size, len(req["user"])
    shown = _fill_pages(rng, req["user"], P, picker)
    user = np.repeat(req["user"], P)
    affinity = user_item_affinity(users, items.latent, user, shown.ravel())
    click = cfg.spec.click
    belief = (
        affinity
        + click.item_quality * items.quality[shown.ravel()]
        + click.previous_ranker_noise * rng.normal(size=n_req * P)
    )
    order = np.argsort(-belief.reshape(n_req, P), axis=1, kind="stable")
    shown = np.take_along_axis(shown, order, axis=1)
    affinity = np.take_along_axis(affinity.reshape(n_req, P), order, axis=1)
    n = cfg.rows  # the last page may be cut short
    request = np.repeat(np.arange(n_req), P)[:n]
    return Impressions(
        n_requests=n_req,
        request=request,
        request_id=req["id"],
        user=user[:n],
        item=shown.ravel()[:n],
        position=np.tile(np.arange(1, P + 1), n_req)[:n],
        t=req["t"][request],
        hour=req["hour"][request],
        device=req["device"][request],
        affinity=affinity.ravel()[:n],
    )

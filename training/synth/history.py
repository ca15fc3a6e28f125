"""The click history behind the interacted features, and the features computed from it.

Background traffic the log does not show (:func:`background_history`) and the
log's own earlier clicks are indexed by (user, category) and (user, shop)
(:class:`EventIndex`); a daily batch job reads them as of the end of the
previous day (:func:`interacted_features`), and the realised counts enter the
click logit with their own coefficients (:func:`interacted_logit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.synth.catalogue import Items
from training.synth.impressions import Impressions
from training.synth.tastes import ItemPicker
from training.synth.world import HISTORY_DAYS, SECONDS_PER_DAY, Users, user_item_affinity
from training.synth.worlds import ClickModel

NO_SHOP_CLICK_DAYS = 90.0
"""``user_shop_days_since_click`` when the user has no click on the shop in the history."""


class EventIndex:
    """Click events sorted by (key, time): window counts and last-event lookups.

    Times are seconds relative to ``LOG_START`` (negative = before the log).
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray, days: int) -> None:
        self.offset = HISTORY_DAYS * SECONDS_PER_DAY
        self.shift = int(self.offset + days * SECONDS_PER_DAY + 1).bit_length()
        self.mask = (1 << self.shift) - 1
        if len(keys) and int(np.max(keys)) >= 1 << (63 - self.shift):
            raise ValueError(
                f"history keys up to {int(np.max(keys))} do not fit next to {self.shift} time "
                "bits in int64: fewer users, shops or days"
            )
        self.sorted = np.sort(self._pack(keys, times))

    def _pack(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        t = np.asarray(times, dtype=np.int64) + self.offset
        return (np.asarray(keys, dtype=np.int64) << self.shift) | t

    def count(self, keys: np.ndarray, start: int, end: int) -> np.ndarray:
        """Events of each key with ``start <= time < end``."""
        lo = np.searchsorted(self.sorted, self._pack(keys, np.full(len(keys), start)))
        hi = np.searchsorted(self.sorted, self._pack(keys, np.full(len(keys), end)))
        return hi - lo

    def last_before(self, keys: np.ndarray, end: int) -> np.ndarray:
        """Time of each key's last event before ``end``; ``-inf`` when there is none."""
        idx = np.searchsorted(self.sorted, self._pack(keys, np.full(len(keys), end))) - 1
        packed = self.sorted[np.maximum(idx, 0)] if len(self.sorted) else np.zeros(len(keys), int)
        found = (idx >= 0) & ((packed >> self.shift) == keys)
        t = (packed & self.mask) - self.offset
        return np.where(found, t.astype(np.float64), -np.inf)


def background_history(
    rng: np.random.Generator, days: int, users: Users, items: Items, picker: ItemPicker
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clicks of traffic the log does not show: (user, item, time) over history + log days.

    The user clicks, among a few retrieved items, the one with the best affinity
    (Gumbel noise), so the history follows affinity without revealing it exactly.
    """
    span = HISTORY_DAYS + days
    n_events = rng.poisson(users.clicks_per_day * span)
    user = np.repeat(np.arange(len(users.ids)), n_events)
    times = rng.integers(-HISTORY_DAYS * SECONDS_PER_DAY, days * SECONDS_PER_DAY, len(user))
    candidates = np.stack([picker.mixed(user, rng) for _ in range(4)], axis=1)
    score = np.stack(
        [user_item_affinity(users, items.latent, user, candidates[:, k]) for k in range(4)], axis=1
    ) + rng.gumbel(size=candidates.shape)
    item = candidates[np.arange(len(user)), np.argmax(score, axis=1)]
    return user, item, times


def history_indexes(
    user: np.ndarray, item: np.ndarray, t: np.ndarray, items: Items, days: int
) -> tuple[EventIndex, EventIndex]:
    """Click events indexed by (user, category) and by (user, shop)."""
    return (
        EventIndex(user * items.n_categories + items.category[item], t, days),
        EventIndex(user * items.n_shops + items.shop[item], t, days),
    )


def interacted_features(
    imp: Impressions,
    rows: slice,
    day: int,
    items: Items,
    history: list[tuple[EventIndex, EventIndex]],
) -> dict[str, np.ndarray]:
    """Daily-batch interacted features of ``rows`` (all on ``day``) as of the end of
    ``day - 1``, summed over the event indexes in ``history``."""
    user, item = imp.user[rows], imp.item[rows]
    cutoff = day * SECONDS_PER_DAY
    cat_key = user * items.n_categories + items.category[item]
    shop_key = user * items.n_shops + items.shop[item]
    cat7 = np.zeros(len(user), np.int64)
    shop30 = np.zeros(len(user), np.int64)
    last = np.full(len(user), -np.inf)
    for by_cat, by_shop in history:
        cat7 += by_cat.count(cat_key, cutoff - 7 * SECONDS_PER_DAY, cutoff)
        shop30 += by_shop.count(shop_key, cutoff - 30 * SECONDS_PER_DAY, cutoff)
        last = np.maximum(last, by_shop.last_before(shop_key, cutoff))
    days_since = (imp.t[rows] - last) / SECONDS_PER_DAY  # inf without a click
    return {
        "user_cat_clicks_7d": cat7,
        "user_shop_clicks_30d": shop30,
        "user_shop_days_since_click": np.round(np.minimum(days_since, NO_SHOP_CLICK_DAYS), 3),
    }


def interacted_pieces(feats: Any, click: ClickModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three interacted click-logit terms: category count, shop count, shop recency."""
    return (
        click.cat_clicks_7d * np.log1p(np.asarray(feats["user_cat_clicks_7d"])),
        click.shop_clicks_30d * np.log1p(np.asarray(feats["user_shop_clicks_30d"])),
        click.shop_recency * np.exp(-np.asarray(feats["user_shop_days_since_click"]) / 7.0),
    )


def interacted_logit(feats: dict[str, np.ndarray], click: ClickModel) -> np.ndarray:
    by_category, shop_count, shop_recency = interacted_pieces(feats, click)
    return by_category + shop_count + shop_recency

"""The catalogue of the synthetic population: items in categories, shops and brands.

Each item has a price (and its decile within the category), tags, a quality, a
popularity and a latent vector composed from its category, shop, brand and tags
plus an idiosyncratic part (the world's :class:`~training.synth.worlds.LatentModel`
shares). :func:`make_items` draws all of it in one seeded order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from training.synth.sampling import GroupSampler, standardise, unique_ids
from training.synth.world import LATENT_DIM
from training.synth.worlds import World

MAX_CATEGORIES = 40
TAGS_PER_CATEGORY = 12
GLOBAL_TAGS = 20
MAX_TAGS = 5
PRICE_LEVELS = 10  # price_bucket: price decile within the item's category


@dataclass
class Items:
    """The catalogue: features (``frame``) and the hidden truth about each item."""

    ids: np.ndarray  # int64 [I]
    frame: pd.DataFrame  # item_id + ITEM_FEATURES
    tags: pa.ListArray  # list<int64> [I]
    latent: np.ndarray  # float32 [I, d]
    category: np.ndarray  # int64 [I] category index
    shop: np.ndarray  # int64 [I] shop index
    quality: np.ndarray  # float64 [I], unit variance
    price_level: np.ndarray  # float64 [I] in [0, 1]
    popularity: np.ndarray  # float64 [I]
    category_latent: np.ndarray  # float32 [C, d]
    shop_latent: np.ndarray  # float32 [S, d]
    n_categories: int
    n_shops: int


def make_items(rng: np.random.Generator, n: int, spec: World) -> Items:
    """``n`` items in categories, shops and brands, with prices, tags and latent vectors.

    The helpers below draw from ``rng`` in the order they are called here; that
    order is part of every generated log for a given seed, so keep it.
    """
    d = LATENT_DIM
    n_cat = min(MAX_CATEGORIES, max(4, n // 20))
    n_shops = max(n_cat, n // 8)
    n_brands = max(n_cat, n // 15)
    shop_size, shop, category, brand = _placement(rng, n, n_cat, n_shops, n_brands)

    cat_latent = rng.normal(size=(n_cat, d))
    shop_latent = rng.normal(size=(n_shops, d))
    brand_latent = rng.normal(size=(n_brands, d))
    tag_latent = rng.normal(size=(n_cat * TAGS_PER_CATEGORY + GLOBAL_TAGS, d))
    tags, tag_part = _tags(rng, category, tag_latent, n_cat)
    parts = (
        (spec.latent.item_category, cat_latent[category]),
        (spec.latent.item_shop, shop_latent[shop]),
        (spec.latent.item_brand, brand_latent[brand]),
        (spec.latent.item_tags, tag_part),
    )
    latent = _compose_latent(rng, n, parts)
    popularity, quality = _popularity_and_quality(rng, spec, shop_size, shop)
    price, price_bucket = _prices(rng, category, brand, n_cat, n_brands)

    ids = unique_ids(rng, n, 10**10, 10**12)
    cat_ids = unique_ids(rng, n_cat, 10**7, 10**8)
    shop_ids = unique_ids(rng, n_shops, 10**8, 10**11)
    brand_ids = unique_ids(rng, n_brands, 10**6, 10**10)
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "category_id": cat_ids[category],
            "shop_id": shop_ids[shop],
            "brand_id": brand_ids[brand],
            "price": price,
            "price_bucket": price_bucket,
            "tags": pd.arrays.ArrowExtensionArray(tags),
        }
    )
    return Items(
        ids=ids,
        frame=frame,
        tags=tags,
        latent=latent.astype(np.float32),
        category=category,
        shop=shop,
        quality=quality,
        price_level=price_bucket / (PRICE_LEVELS - 1),
        popularity=popularity,
        category_latent=cat_latent.astype(np.float32),
        shop_latent=shop_latent.astype(np.float32),
        n_categories=n_cat,
        n_shops=n_shops,
    )


def _placement(
    rng: np.random.Generator, n: int, n_cat: int, n_shops: int, n_brands: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shop sizes [S] and each item's shop, category and brand (int64 [n] each)."""
    # every category has at least one shop and one brand
    shop_cat = np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, n_shops - n_cat)])
    brand_cat = np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, n_brands - n_cat)])
    shop_size = rng.lognormal(0.0, 1.0, size=n_shops)
    shop = rng.choice(n_shops, size=n, p=shop_size / shop_size.sum())
    category = np.where(rng.random(n) < 0.85, shop_cat[shop], rng.integers(0, n_cat, n))
    brand = GroupSampler(brand_cat, np.ones(n_brands), n_cat).draw(category, rng)
    return shop_size, shop, category, brand


def _tags(
    rng: np.random.Generator, category: np.ndarray, tag_latent: np.ndarray, n_cat: int
) -> tuple[pa.ListArray, np.ndarray]:
    """Each item's tags (list<int64> [n]) and their latent part (float64 [n, d]).

    1..MAX_TAGS distinct tags from the category's pool, sometimes one global tag.
    """
    n = len(category)
    n_tags = 1 + rng.binomial(MAX_TAGS - 1, 0.5, size=n)
    pick = np.argsort(rng.random((n, TAGS_PER_CATEGORY)), axis=1)[:, :MAX_TAGS]
    tag_index = category[:, None] * TAGS_PER_CATEGORY + pick
    has_global = rng.random(n) < 0.3
    global_tag = n_cat * TAGS_PER_CATEGORY + rng.integers(0, GLOBAL_TAGS, n)
    tag_index[np.arange(n), n_tags - 1] = np.where(
        has_global, global_tag, tag_index[np.arange(n), n_tags - 1]
    )
    in_bag = np.arange(MAX_TAGS)[None, :] < n_tags[:, None]
    tag_sum = np.where(in_bag[:, :, None], tag_latent[tag_index], 0.0).sum(axis=1)
    tag_part = tag_sum / np.sqrt(n_tags)[:, None]  # unit variance again
    tag_ids = unique_ids(rng, len(tag_latent), 100_000, 1_000_000)
    tags = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(n_tags)]).astype(np.int32)),
        pa.array(tag_ids[tag_index[in_bag]], type=pa.int64()),
    )
    return tags, tag_part


def _compose_latent(
    rng: np.random.Generator, n: int, parts: tuple[tuple[float, np.ndarray], ...]
) -> np.ndarray:
    """Item latent vectors float64 [n, d]: the weighted ``parts`` plus an idiosyncratic rest.

    Args:
        parts: (variance share, unit-variance vectors [n, d]) per observable part.
    """
    rest = 1.0 - sum(w for w, _ in parts)
    latent = math.sqrt(rest) * rng.normal(size=(n, LATENT_DIM))
    for w, part in parts:
        latent += math.sqrt(w) * part
    return latent


def _popularity_and_quality(
    rng: np.random.Generator, spec: World, shop_size: np.ndarray, shop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Item popularity (the long tail, float64 [n]) and quality (unit variance, float64 [n])."""
    n = len(shop)
    popularity = rng.lognormal(0.0, spec.popularity_sigma, size=n) * shop_size[shop] ** 0.3
    shop_quality = rng.normal(size=len(shop_size))
    quality = standardise(
        rng.normal(size=n) + 0.5 * shop_quality[shop] + 0.4 * standardise(np.log(popularity))
    )
    return popularity, quality


def _prices(
    rng: np.random.Generator, category: np.ndarray, brand: np.ndarray, n_cat: int, n_brands: int
) -> tuple[np.ndarray, np.ndarray]:
    """Item prices (float64 [n]) and their decile inside the category (int64 [n])."""
    n = len(category)
    cat_price = np.exp(rng.normal(math.log(80.0), 0.9, size=n_cat))
    brand_premium = rng.lognormal(0.0, 0.3, size=n_brands)
    raw_price = cat_price[category] * brand_premium[brand] * rng.lognormal(0.0, 0.5, size=n)
    price = np.maximum(np.round(raw_price) - 0.01, 0.99)
    # price decile inside the category
    order = np.lexsort((price, category))
    counts = np.bincount(category, minlength=n_cat)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[category[order]]
    pct = rank / np.maximum(counts[category] - 1, 1)
    price_bucket = np.minimum((pct * PRICE_LEVELS).astype(np.int64), PRICE_LEVELS - 1)
    return price, price_bucket

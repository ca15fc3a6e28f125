"""What the simulated users look at, and the retrieval channels that follow it.

A user's tastes are category interests (the latent affinity to the category, a
private per (user, category) taste and the category's size) and a few favourite
shops. :class:`ItemPicker` fills a page slot from one of the feed's channels:
an interest, a favourite shop, or the globally popular items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.synth.catalogue import Items
from training.synth.sampling import GroupSampler
from training.synth.world import LATENT_DIM, Users
from training.synth.worlds import World, max_normal_moments

FAVOURITE_SHOPS = 3

# Which channel fills a page slot (the retrieval mix of the simulated feed).
SLOT_FROM_INTEREST = 0.55  # a category drawn from the user's interests
SLOT_FROM_FAVOURITE_SHOP = 0.10  # one of the user's favourite shops
# the rest: globally popular items


@dataclass
class Tastes:
    """What a user tends to look at: category interests and favourite shops."""

    category: GroupSampler  # groups = users, members = user * C + category
    favourite_shops: np.ndarray  # int64 [U, FAVOURITE_SHOPS]
    taste: np.ndarray  # float64 [U, C]: the private N(0, 1) taste per (user, category)


def _best_of(per_interest: list[np.ndarray]) -> np.ndarray:
    """The one-interest affinity as is, or the standardised best over the interests."""
    if len(per_interest) == 1:
        return per_interest[0]
    mean, std = max_normal_moments(len(per_interest))
    return (np.max(per_interest, axis=0) - mean) / std


def make_tastes(rng: np.random.Generator, users: Users, items: Items, spec: World) -> Tastes:
    """Category interests (affinity + a private taste + category size) and favourite shops."""
    n_users, n_cat = len(users.ids), items.n_categories
    vectors = [users.latent] if users.interests is None else list(users.interests.swapaxes(0, 1))
    cat_traffic = np.bincount(items.category, items.popularity, minlength=n_cat)
    cat_affinity = _best_of(
        [(u @ items.category_latent.T) / math.sqrt(LATENT_DIM) for u in vectors]
    )
    taste = rng.normal(size=(n_users, n_cat))
    logits = (
        spec.latent.interest_affinity * cat_affinity
        + spec.latent.interest_taste * taste
        + np.log(np.maximum(cat_traffic / cat_traffic.sum(), 1e-300))[None, :]
    )
    share = np.exp(logits - logits.max(axis=1, keepdims=True))
    share[:, cat_traffic == 0] = 0.0  # a category without items is never browsed
    groups = np.repeat(np.arange(n_users), n_cat)
    category = GroupSampler(groups, share.ravel(), n_users)

    # favourite shops: among popular shops, the ones the user likes best
    shop_traffic = np.bincount(items.shop, items.popularity, minlength=items.n_shops)
    candidates = rng.choice(
        items.n_shops, size=(n_users, 4 * FAVOURITE_SHOPS), p=shop_traffic / shop_traffic.sum()
    )
    shop_vectors = items.shop_latent[candidates]
    like = _best_of(
        [np.einsum("ud,ukd->uk", u, shop_vectors) / math.sqrt(LATENT_DIM) for u in vectors],
    ) + rng.gumbel(size=candidates.shape)
    best = np.argsort(-like, axis=1)[:, :FAVOURITE_SHOPS]
    return Tastes(
        category=category,
        favourite_shops=np.take_along_axis(candidates, best, 1),
        taste=taste,
    )


class ItemPicker:
    """Retrieval channels of the simulated feed (and of the background history)."""

    def __init__(self, items: Items, tastes: Tastes) -> None:
        self.items, self.tastes = items, tastes
        self.n_cat = items.n_categories
        self.by_category = GroupSampler(items.category, items.popularity, self.n_cat)
        self.by_shop = GroupSampler(items.shop, items.popularity, items.n_shops)
        self.popular = GroupSampler(np.zeros(len(items.ids), np.int64), items.popularity, 1)

    def from_interest(self, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cat = self.tastes.category.draw(user, rng) - user * self.n_cat
        return self.by_category.draw(cat, rng)

    def from_favourite_shop(self, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        slot = rng.integers(0, FAVOURITE_SHOPS, len(user))
        return self.by_shop.draw(self.tastes.favourite_shops[user, slot], rng)

    def from_popular(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.popular.draw(np.zeros(n, np.int64), rng)

    def mixed(self, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``user`` from the channel mix of the feed."""
        channel = rng.random(len(user))
        item = self.from_popular(len(user), rng)
        interest = channel < SLOT_FROM_INTEREST
        item[interest] = self.from_interest(user[interest], rng)
        fav = (channel >= SLOT_FROM_INTEREST) & (
            channel < SLOT_FROM_INTEREST + SLOT_FROM_FAVOURITE_SHOP
        )
        item[fav] = self.from_favourite_shop(user[fav], rng)
        return item

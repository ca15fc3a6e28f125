"""The data-generating worlds of the synthetic log: typed parameters, one entry per world.

A :class:`World` holds everything that decides what the generated log looks
like apart from its size: how latent vectors are composed, the true click and
conversion models, and the structural switches (how user and item interact,
how heavy the item tail is, how many users are new at test time). The worlds
differ in *structure*, not only in scale, so a recipe can be checked on more
than one of them (docs/SYNTHETIC.md describes each term and its spread)::

    world = WORLDS["interests"]
    frames = generate(rows=200_000, seed=1, world="interests")
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class LatentModel:
    """How the latent vectors are composed (variance shares, each component unit variance)."""

    user_from_features: float = 0.7  # age, gender, city tier, purchasing power
    item_category: float = 0.35
    item_shop: float = 0.15
    item_brand: float = 0.10
    item_tags: float = 0.15  # the rest of the item vector is idiosyncratic
    interest_affinity: float = 1.5  # user×category interest: affinity to the category ...
    interest_taste: float = 1.0  # ... plus a taste the latent vectors do not know


@dataclass(frozen=True)
class ClickModel:
    """The true click logit, term by term (see docs/SYNTHETIC.md)."""

    intercept: float = -3.7
    affinity: float = 0.8  # × user·item latent affinity (unit variance)
    log_position: float = -0.6  # × ln(position)
    user_bias_std: float = 0.3
    item_quality: float = 0.35  # × item quality (unit variance)
    price_over_budget: float = -0.6  # × max(0, price level − purchasing level), both in [0, 1]
    cat_clicks_7d: float = 0.30  # × ln(1 + user_cat_clicks_7d)
    shop_clicks_30d: float = 0.30  # × ln(1 + user_shop_clicks_30d)
    shop_recency: float = 0.30  # × exp(−user_shop_days_since_click / 7)
    hour_amplitude: float = 0.15  # × cos(2π (hour − 21) / 24): evenings click more
    device: tuple[float, ...] = (0.0, 0.10, -0.25)  # android, ios, web
    previous_ranker_noise: float = 2.0  # page order = affinity + quality + this × N(0, 1)
    category_taste: float = 0.0  # × the user's private taste for the item's category, N(0, 1)


@dataclass(frozen=True)
class ConversionModel:
    """Post-click behaviour from a purchase intent, and the true conversion logit.

    intent = affinity, quality and budget terms + N(0, 1); each behaviour is
    ``base + slope × intent`` on its own scale (log seconds, log rate, logits).
    """

    intent_affinity: float = 0.5
    intent_quality: float = 0.4
    intent_over_budget: float = -1.5
    dwell_log_seconds: tuple[float, float, float] = (3.0, 0.45, 0.6)  # base, slope, noise std
    reviews_log_rate: tuple[float, float] = (-0.3, 0.55)  # Poisson
    chat_logit: tuple[float, float] = (-2.6, 0.7)
    cart_logit: tuple[float, float] = (-1.6, 1.1)
    intercept: float = -5.0
    added_to_cart: float = 1.8
    chatted_with_seller: float = 0.8
    log_reviews: float = 0.5  # × ln(1 + reviews_viewed)
    log_dwell: float = 0.7  # × (ln(dwell seconds) − 3)
    affinity: float = 0.3
    price_over_budget: float = -1.0


@dataclass(frozen=True)
class World:
    """One data-generating world: the models and the structural switches.

    Attributes:
        name: the key in :data:`WORLDS` (``rocketrank synth --world NAME``).
        summary: one line on what sets the world apart.
        latent: composition of the latent vectors.
        click: the true click logit.
        conversion: post-click behaviour and the true conversion logit.
        interests: latent interest vectors per user. 1: the affinity is the dot
            product ``u·v/√d``; K > 1: the best of K interests,
            ``max_k u_k·v/√d``, standardised to unit variance (not a dot
            product, so a two-tower can only approximate it).
        popularity_sigma: lognormal σ of item popularity (the item long tail;
            the retrieval channels draw items in proportion to it).
        new_user_share: fraction of users who sign up at ``new_user_join`` of
            the log's time span: no request and no background click before.
        new_user_join: when the new users join, as a fraction of the log's span
            (0.8 ≈ where the train split ends).
    """

    name: str
    summary: str
    latent: LatentModel = field(default_factory=LatentModel)
    click: ClickModel = field(default_factory=ClickModel)
    conversion: ConversionModel = field(default_factory=ConversionModel)
    interests: int = 1
    popularity_sigma: float = 1.3
    new_user_share: float = 0.0
    new_user_join: float = 0.8

    def __post_init__(self) -> None:
        if not 1 <= self.interests <= 16:
            raise ValueError(f"world {self.name!r}: interests must be in [1, 16]")
        if not 0.0 <= self.new_user_share < 1.0 or not 0.0 < self.new_user_join < 1.0:
            raise ValueError(
                f"world {self.name!r}: new_user_share in [0, 1), new_user_join in (0, 1)"
            )
        if self.popularity_sigma <= 0:
            raise ValueError(f"world {self.name!r}: popularity_sigma must be > 0")

    def params(self) -> dict[str, Any]:
        """Every parameter as plain JSON values (what ``stats.json`` records)."""
        return asdict(self)


FEED = World(
    name="feed",
    summary="dot-product affinity dominates; strong position bias; interacted counts add signal",
)

INTERESTS = World(
    name="interests",
    summary=(
        "max over 3 interests instead of a dot product; a per (user, category) taste dominates "
        "the click logit; weaker position bias; heavier item tail; 30% of users are new at test"
    ),
    click=replace(FEED.click, intercept=-4.3, affinity=0.5, log_position=-0.3, category_taste=0.9),
    interests=3,
    popularity_sigma=1.9,
    new_user_share=0.3,
)

WORLDS: dict[str, World] = {w.name: w for w in (FEED, INTERESTS)}
"""Every world by name; ``feed`` is the default (and the log every earlier run used)."""

DEFAULT_WORLD = "feed"


def get_world(name: str) -> World:
    """The world called ``name``; ``KeyError`` naming the known worlds otherwise."""
    try:
        return WORLDS[name]
    except KeyError:
        raise KeyError(f"unknown world {name!r}; known: {sorted(WORLDS)}") from None


@functools.cache
def max_normal_moments(k: int) -> tuple[float, float]:
    """Mean and std of the maximum of ``k`` independent N(0, 1) (numerical integration).

    Standardises the best-of-K affinity: given an item vector, each interest's
    ``u_k·v/√d`` is N(0, 1) and independent of the others.
    """
    if k == 1:
        return 0.0, 1.0
    step = 1e-3
    m1 = m2 = 0.0
    for i in range(-8000, 8001):
        x = i * step
        phi = math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1.0 + math.erf(x / math.sqrt(2)))
        density = k * phi * cdf ** (k - 1)
        m1 += x * density * step
        m2 += x * x * density * step
    return m1, math.sqrt(m2 - m1 * m1)


__all__ = [
    "DEFAULT_WORLD",
    "FEED",
    "INTERESTS",
    "WORLDS",
    "ClickModel",
    "ConversionModel",
    "LatentModel",
    "World",
    "get_world",
    "max_normal_moments",
]

"""The simulated population behind the synthetic feed (see :mod:`training.synth.generator`).

Users and items with observable features and latent vectors, the users' tastes
(category interests, favourite shops), the retrieval channels that fill a page,
and the background click history the interacted features are computed from.
This module holds the users and the constants the population shares; the
catalogue is :mod:`training.synth.catalogue`, the tastes and retrieval channels
:mod:`training.synth.tastes`, the history :mod:`training.synth.history`, the
sampling helpers :mod:`training.synth.sampling`. Nothing here draws a click of
the log; :mod:`training.synth.labels` does that.

Latent vectors: every component has unit variance, so ``u·v / sqrt(d)`` (the
affinity) has unit variance; the world's :class:`~training.synth.worlds.LatentModel`
shares say how much of a vector follows from observable features and how much
is idiosyncratic (then only the id can learn it). A world with several interests
per user takes the best interest's affinity, standardised (:func:`user_item_affinity`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.synth.sampling import affinity, best_interest, unique_ids
from training.synth.worlds import World

SECONDS_PER_DAY = 86_400
HISTORY_DAYS = 30  # simulated background history before the log starts
LATENT_DIM = 16
DEVICES = ("android", "ios", "web")
GENDERS = ("female", "male", "unknown")

# Background clicks per day by activity level (the log is a sample of traffic;
# these clicks feed the interacted features but are not rows of the log).
BACKGROUND_CLICKS_PER_DAY = (0.15, 0.4, 1.0, 2.5)
ACTIVITY_SHARE = (0.45, 0.30, 0.18, 0.07)
REQUEST_WEIGHT = (1.0, 4.0, 15.0, 50.0)  # how often each activity level opens the feed


@dataclass
class Users:
    """The user population: features (``frame``) and the hidden truth about each user."""

    ids: np.ndarray  # int64 [U]
    frame: pd.DataFrame  # user_id + USER_FEATURES
    latent: np.ndarray  # float32 [U, d]
    purchasing_level: np.ndarray  # float64 [U] in [0, 1]
    clicks_per_day: np.ndarray  # float64 [U] background click rate
    request_weight: np.ndarray  # float64 [U]
    device: np.ndarray  # int64 [U] preferred device
    interests: np.ndarray | None = None  # float32 [U, K, d] when the world has K > 1 interests
    is_new: np.ndarray | None = None  # bool [U]: joins late (the world's new_user_share)


def make_users(rng: np.random.Generator, n: int, spec: World) -> Users:
    """Demographics, activity, purchasing power, latent vectors and ids of ``n`` users.

    The draws of a one-interest world without new users come first and in the
    same order as ever, so the ``feed`` world's log does not change.
    """
    d = LATENT_DIM
    age = rng.choice(7, size=n, p=[0.08, 0.22, 0.26, 0.2, 0.12, 0.08, 0.04])
    gender = rng.choice(3, size=n, p=[0.52, 0.40, 0.08])
    tier = rng.choice(5, size=n, p=[0.1, 0.2, 0.3, 0.25, 0.15])  # 0 = tier-1 city
    # purchasing power: richer in big cities and in the middle age buckets
    wealth = rng.normal(size=n) - 0.35 * (tier - 2) - 0.08 * (age - 3) ** 2
    power = np.searchsorted(np.quantile(wealth, [0.2, 0.4, 0.6, 0.8]), wealth)  # 0..4
    activity = rng.choice(4, size=n, p=ACTIVITY_SHARE)

    tables = [rng.normal(size=(k, d)) for k in (7, 3, 5, 5)]
    from_features = (
        tables[0][age] + tables[1][gender] + tables[2][tier] + tables[3][power]
    ) / 2.0  # four unit-variance parts
    idiosyncratic = rng.normal(size=(n, d))
    w = spec.latent.user_from_features
    latent = (math.sqrt(w) * from_features + math.sqrt(1 - w) * idiosyncratic).astype(np.float32)

    jitter = rng.lognormal(0.0, 0.3, size=n)
    clicks_per_day = np.asarray(BACKGROUND_CLICKS_PER_DAY)[activity] * jitter
    request_weight = np.asarray(REQUEST_WEIGHT)[activity] * rng.lognormal(0.0, 0.8, size=n)
    device = rng.choice(len(DEVICES), size=n, p=[0.55, 0.35, 0.10])
    ids = unique_ids(rng, n, 10**9, 10**12)
    frame = pd.DataFrame(
        {
            "user_id": ids,
            "age_bucket": age.astype(np.int64),
            "gender": np.asarray(GENDERS, dtype=object)[gender],
            "city_tier": (tier + 1).astype(np.int64),
            "activity_level": activity.astype(np.int64),
            "purchasing_power": (power + 1).astype(np.int64),
        }
    )
    frame["gender"] = frame["gender"].astype(str)
    interests = None
    if spec.interests > 1:  # every further interest is composed like the first one
        more = [latent]
        for _ in range(spec.interests - 1):
            tables = [rng.normal(size=(k, d)) for k in (7, 3, 5, 5)]
            part = (tables[0][age] + tables[1][gender] + tables[2][tier] + tables[3][power]) / 2.0
            own = rng.normal(size=(n, d))
            more.append((math.sqrt(w) * part + math.sqrt(1 - w) * own).astype(np.float32))
        interests = np.stack(more, axis=1)
    is_new = rng.random(n) < spec.new_user_share if spec.new_user_share > 0 else None
    return Users(
        ids=ids,
        frame=frame,
        latent=latent,
        purchasing_level=power / 4.0,
        clicks_per_day=clicks_per_day,
        request_weight=request_weight,
        device=device,
        interests=interests,
        is_new=is_new,
    )


def user_item_affinity(
    users: Users, item_latent: np.ndarray, ui: np.ndarray, vi: np.ndarray
) -> np.ndarray:
    """The world's affinity for index pairs: the dot product, or the best of the interests."""
    if users.interests is None:
        return affinity(users.latent, item_latent, ui, vi)
    return best_interest(users.interests, item_latent, ui, vi)

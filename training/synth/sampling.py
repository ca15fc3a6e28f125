"""Seeded sampling and affinity helpers the synthetic population is drawn with.

Distinct random ids, standardisation, weighted draws within groups
(:class:`GroupSampler`) and the standardised latent affinity of user-item index
pairs, for one latent vector per user (:func:`affinity`) or the best of several
(:func:`best_interest`). Used by :mod:`training.synth.world` and the modules of
the population next to it.
"""

from __future__ import annotations

import math

import numpy as np

from training.synth.worlds import max_normal_moments


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct random int64 ids in ``[low, high)``, in random order."""
    ids = np.unique(rng.integers(low, high, size=n + n // 10 + 16, dtype=np.int64))
    while len(ids) < n:  # only when the range is nearly exhausted
        more = rng.integers(low, high, size=n, dtype=np.int64)
        ids = np.unique(np.concatenate([ids, more]))
    return rng.permutation(ids)[:n]


def standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


class GroupSampler:
    """Draws a member of a group with probability proportional to its weight.

    One ``searchsorted`` for a whole batch of draws: members are laid out by
    group on ``[g, g + 1)`` by their within-group cumulative weight. Draw only
    from groups with positive total weight (an empty group yields a member of
    the next group).
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(groups, kind="stable")
        g = groups[self.order]
        w = weights[self.order].astype(np.float64)
        total = np.bincount(g, w, minlength=n_groups)
        cum = np.cumsum(w)
        before = np.concatenate([[0.0], np.cumsum(total)])[:-1]
        within = (cum - before[g]) / np.where(total[g] > 0, total[g], 1.0)
        last = np.ones(len(g), dtype=bool)
        last[:-1] = g[1:] != g[:-1]
        within[last] = 1.0  # no rounding gap at the end of a group
        self.keys = g + within

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Members (indices into the constructor's arrays) for each group in ``groups``."""
        r = rng.random(len(groups))
        pos = np.searchsorted(self.keys, groups + r, side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]


def affinity(u: np.ndarray, v: np.ndarray, ui: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Standardised latent affinity ``u·v / sqrt(d)`` for index pairs, in blocks."""
    out = np.empty(len(ui), dtype=np.float64)
    block = 1 << 18
    for s in range(0, len(ui), block):
        e = s + block
        out[s:e] = np.einsum("ij,ij->i", u[ui[s:e]], v[vi[s:e]], dtype=np.float64)
    return out / math.sqrt(u.shape[1])


def best_interest(
    interests: np.ndarray, v: np.ndarray, ui: np.ndarray, vi: np.ndarray
) -> np.ndarray:
    """Standardised ``max_k u_k·v / sqrt(d)`` over the interests ``[U, K, d]`` of each user.

    Each interest's affinity is N(0, 1) and independent given the item, so the
    moments of the maximum of K standard normals bring it back to unit variance.
    """
    k = interests.shape[1]
    best = np.max([affinity(interests[:, j], v, ui, vi) for j in range(k)], axis=0)
    mean, std = max_normal_moments(k)
    return (best - mean) / std

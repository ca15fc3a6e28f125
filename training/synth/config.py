"""Size and layout of the generated log: :class:`SynthConfig`, splits, time origin, row groups.

The config checks its arguments (:class:`SynthConfigError` names the wrong one)
and derives the population sizes; the constants say how the log is laid out in
time and on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from training.synth.world import SECONDS_PER_DAY
from training.synth.worlds import DEFAULT_WORLD, WORLDS, World

ROW_GROUP_ROWS = 65_536
"""Parquet row-group size; the data layer streams one row group per chunk.

The writer and the stats read it as ``config.ROW_GROUP_ROWS``, so a test that
patches it here changes both the files and ``stats.json``.
"""

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # of requests, in request-time order

LOG_START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
"""Unix seconds of the first day of the log (``ts`` is int64 Unix seconds)."""


class SynthConfigError(ValueError):
    """Arguments that cannot produce a sensible log; the message names the argument."""


@dataclass(frozen=True)
class SynthConfig:
    """Size of the generated log.

    Attributes:
        rows: impressions in the log (all splits).
        seed: RNG seed; the same config gives the same content.
        users: number of users (default scales sub-linearly with rows: 20k at 200k rows).
        items: number of items (default 10k at 200k rows).
        page_size: items per request, positions 1..page_size.
        days: days covered by the log (the split is by request time).
        world: the data-generating world, a key of ``WORLDS`` (``training.synth.worlds``).
    """

    rows: int
    seed: int = 0
    users: int | None = None
    items: int | None = None
    page_size: int = 10
    days: int = 14
    world: str = DEFAULT_WORLD

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise SynthConfigError(f"world must be one of {sorted(WORLDS)}, got {self.world!r}")
        checks = [
            ("page_size", self.page_size, 1, 1_000),
            ("rows", self.rows, 10 * max(self.page_size, 1), 10**9),
            ("days", self.days, 3, 365),
            ("seed", self.seed, 0, 2**63 - 1),
        ]
        if self.users is not None:
            checks.append(("users", self.users, 10, 10**7))
        if self.items is not None:
            checks.append(("items", self.items, 20, 10**7))
        for name, value, low, high in checks:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SynthConfigError(
                    f"{name} must be an integer in [{low}, {high}], got {value!r}"
                )

    @property
    def spec(self) -> World:
        """The parameters of ``world``."""
        return WORLDS[self.world]

    @property
    def n_users(self) -> int:
        return self.users or max(50, round(20_000 * math.sqrt(self.rows / 200_000)))

    @property
    def n_items(self) -> int:
        return self.items or max(50, round(10_000 * math.sqrt(self.rows / 200_000)))


def join_seconds(cfg: SynthConfig) -> float:
    """When the world's new users join, in seconds since ``LOG_START``."""
    return cfg.spec.new_user_join * cfg.days * SECONDS_PER_DAY

"""int8 planning: which parts of the light net ``--quantize int8`` stores in 8 bits.

``export_run`` tries the plans of :func:`int8_plans` in order and keeps the first
whose exported module passes the parity check (``training.export.parity``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SMALL_TABLE_ROWS = 1024
"""The last int8 fallback keeps tables with fewer rows in fp32."""


@dataclass(frozen=True)
class Int8Plan:
    """What ``--quantize int8`` turns into 8 bits.

    Attributes:
        min_rows: embedding tables with at least this many rows are int8.
        linears: Linear weights are int8 too.
        item_vectors: two-tower item vectors stored as ``int8`` or ``fp16``.
    """

    min_rows: int
    linears: bool
    item_vectors: str = "int8"

    def __str__(self) -> str:
        linears = "int8" if self.linears else "fp32"
        return (
            f"(tables >= {self.min_rows} rows, {linears} Linear weights, "
            f"{self.item_vectors} item vectors)"
        )


def int8_plans(min_rows: int = 0, linears: bool = True, two_tower: bool = False) -> list[Int8Plan]:
    """int8 plans from the smallest artifact to the most exact, tried in order until
    one passes parity: Linear weights are the most error per byte saved (a
    rounding error there reaches every row), small tables the least bytes. A
    two-tower net's last resort keeps its item vectors in fp16: their rounding
    reaches every served logit and no model-side plan can undo it."""
    plans = [Int8Plan(min_rows, True)] if linears else []
    plans.append(Int8Plan(min_rows, False))
    if min_rows < SMALL_TABLE_ROWS:
        plans.append(Int8Plan(SMALL_TABLE_ROWS, False))
    if two_tower:
        plans.append(replace(plans[-1], item_vectors="fp16"))
    return plans


__all__ = ["SMALL_TABLE_ROWS", "Int8Plan", "int8_plans"]

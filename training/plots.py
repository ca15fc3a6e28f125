"""PNG figures of a run and of an ablation (matplotlib, Agg backend, no display).

Inputs are the records the trainer writes to ``RUN/metrics.jsonl``:

* ``{"kind": "step", "step", "epoch", "loss": {term: value}, ...}``
* ``{"kind": "eval", "step", "epoch", "split", "light": {metric: v}, "booster": {...}}``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # backend chosen above, before pyplot loads

_COLORS = {"booster": "tab:red", "light": "tab:blue"}
_TERM_STYLE = {
    "booster_bce": ("tab:red", "-"),
    "light_bce": ("tab:blue", "-"),
    "hint": ("tab:green", "-"),
    "loss": ("tab:gray", ":"),
}


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average that ignores NaN (short runs stay readable)."""
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        finite = [a for a in acc if math.isfinite(a)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def plot_learning_curves(records: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Training losses per step and validation AUC/logloss per evaluation, booster vs light."""
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    ax = axes[0]
    terms = sorted({t for r in steps for t in r.get("loss", {})})
    window = max(1, len(steps) // 50)
    for term in terms:
        xs = [r["step"] for r in steps if term in r["loss"]]
        ys = _smooth([r["loss"][term] for r in steps if term in r["loss"]], window)
        color, style = _TERM_STYLE.get(term, (None, "-"))
        ax.plot(xs, ys, style, label=term, color=color, linewidth=1.2)
    # the hint and the BCE terms differ by orders of magnitude early in training
    if terms and all(v > 0 for r in steps for v in r["loss"].values()):
        ax.set_yscale("log")
    ax.set_title("training loss (moving average)")
    ax.set_xlabel("step")
    if terms:
        ax.legend(fontsize=8)

    for ax, metric in ((axes[1], "auc"), (axes[2], "logloss")):
        for net in ("booster", "light"):
            pts = [
                (r["step"], r[net][metric])
                for r in evals
                if isinstance(r.get(net), Mapping) and r[net].get(metric) is not None
            ]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o-", label=net, color=_COLORS[net])
        ax.set_title(f"validation {metric}")
        ax.set_xlabel("step")
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ablation(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Bar chart of light-net AUC per variant (booster AUC as a marker) and train time."""
    names = [r["variant"] for r in rows]
    light = [_num((r.get("light") or {}).get("auc")) for r in rows]
    booster = [_num((r.get("booster") or {}).get("auc")) for r in rows]
    seconds = [_num(r.get("train_seconds")) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    xs = list(range(len(rows)))
    bars = ax1.bar(xs, light, color=_COLORS["light"], label="light net AUC")
    ax1.scatter(xs, booster, color=_COLORS["booster"], marker="_", s=400, label="booster AUC")
    finite = [v for v in light + booster if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        pad = max(0.005, (hi - lo) * 0.3)
        ax1.set_ylim(lo - pad, hi + pad)
    for bar, v in zip(bars, light):
        if math.isfinite(v):
            ax1.annotate(f"{v:.4f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                         va="bottom", fontsize=8)  # fmt: skip
    ax1.set_xticks(xs, names, rotation=30, ha="right")
    ax1.set_title(f"test AUC {title}".strip())
    ax1.legend(fontsize=8)
    cpu = [_num(r.get("train_cpu_seconds")) for r in rows]
    width = 0.4
    ax2.bar([x - width / 2 for x in xs], cpu, width, color="tab:gray", label="CPU s")
    ax2.bar([x + width / 2 for x in xs], seconds, width, color="lightgray", label="wall s")
    ax2.set_xticks(xs, names, rotation=30, ha="right")
    ax2.set_title("training time of the optimiser steps")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan


__all__ = ["plot_ablation", "plot_learning_curves"]

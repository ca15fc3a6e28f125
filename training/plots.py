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
    """Dot plot of each variant's paired Δ test AUC vs light_alone with its 95% interval.

    ``rows`` are the ablation report's rows (``training.ablate.summary``): each
    distilled variant's ``delta_vs_light_alone`` (``mean``, ``low``, ``high``,
    ``per_seed``) is a dot with its bootstrap interval as a horizontal bar and
    its per-seed differences as small marks; a vertical line marks 0 (no gain).
    Variants without a paired difference (the baselines) are left out. The axis
    is centred on 0, so no bar is cut and a gain reads against "nothing".
    """
    shown = [r for r in rows if r.get("delta_vs_light_alone")]
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.55 * max(len(shown), 1)))
    ax.axvline(0.0, color="tab:gray", linewidth=1, linestyle="--", zorder=1)
    reach = 0.001
    for y, row in enumerate(reversed(shown)):
        d = row["delta_vs_light_alone"]
        mean, low, high = _num(d.get("mean")), _num(d.get("low")), _num(d.get("high"))
        covers_zero = low <= 0.0 <= high
        color = "tab:gray" if covers_zero else ("tab:green" if mean > 0 else "tab:red")
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color=color,
                    capsize=4, markersize=7, zorder=3)  # fmt: skip
        seeds = [_num(v) for v in d.get("per_seed") or []]
        ax.scatter(seeds, [y - 0.22] * len(seeds), marker="d", s=18, color=color, alpha=0.7,
                   zorder=2)  # fmt: skip
        ax.annotate(f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]", (high, y), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
        reach = max(reach, *(abs(v) for v in (low, high, *seeds) if math.isfinite(v)))
    ax.set_yticks(range(len(shown)), [r["variant"] for r in reversed(shown)])
    # symmetric around 0, with room on the right for the labels
    ax.set_xlim(-reach * 1.15, reach * 1.9)
    ax.set_ylim(-0.7, max(len(shown), 1) - 0.3)
    ax.set_xlabel(
        "Δ test AUC vs light_alone (paired on the same test rows)\n"
        "dot = mean over seeds, bar = 95% CI, diamonds = single seeds; grey = CI includes 0"
    )
    ax.set_title(f"light-net gain over light_alone {f'({title})' if title else ''}".strip())
    if not shown:
        ax.text(0.5, 0.5, "no distilled variant (or no light_alone) to compare",
                transform=ax.transAxes, ha="center")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan


__all__ = ["plot_ablation", "plot_learning_curves"]

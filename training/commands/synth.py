"""``rocketrank synth``: write the synthetic e-commerce impression log.

Example::

    rocketrank synth --out data/ --rows 1000000 --seed 1
    rocketrank synth --out data/ --rows 1000000 --seed 1 --world interests
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.synth.config import SynthConfigError
from training.synth.generator import write
from training.synth.worlds import DEFAULT_WORLD, WORLDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--rows", type=int, default=200_000, help="impressions (default 200000)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument(
        "--users", type=int, default=None, help="number of users (default: 20k × sqrt(rows/200k))"
    )
    parser.add_argument(
        "--items", type=int, default=None, help="number of items (default: 10k × sqrt(rows/200k))"
    )
    parser.add_argument("--page-size", type=int, default=10, help="items per request")
    parser.add_argument("--days", type=int, default=14, help="days covered by the log")
    parser.add_argument(
        "--world",
        choices=sorted(WORLDS),
        default=DEFAULT_WORLD,
        help=f"data-generating world (default {DEFAULT_WORLD}; docs/SYNTHETIC.md)",
    )


def _fmt(value: float | None) -> str:
    """A stats value for the summary line; a tiny log may have none (JSON null)."""
    return "n/a" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    try:
        stats = write(
            args.out,
            rows=args.rows,
            seed=args.seed,
            users=args.users,
            items=args.items,
            page_size=args.page_size,
            days=args.days,
            world=args.world,
        )
    except SynthConfigError as exc:
        print(f"rocketrank synth: {exc}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{k} {v:,}" for k, v in stats["splits"].items())
    print(
        f"wrote {stats['rows']:,} impressions of world {stats['world']!r} to {args.out} "
        f"({splits}) in {stats['seconds']} s\n"
        f"users {stats['users']:,}  items {stats['items']:,}  CTR {_fmt(stats['ctr'])}  "
        f"CVR {_fmt(stats['cvr'])}  oracle AUC click {_fmt(stats['oracle_auc_click'])}  "
        f"(user×item {_fmt(stats.get('oracle_auc_click_user_item'))})  "
        f"conversion {_fmt(stats['oracle_auc_conversion'])}"
    )
    return 0

"""``rocketrank models list|promote|rollback``: manage a model repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.contract.artifact import ArtifactError, read_manifest
from models.contract.repository import ModelRepository, RepositoryError


def add_arguments_for(path: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", required=True, type=Path, help="model repository root")
    if path == "models list":
        parser.add_argument("--name", default=None, help="one model (default: every model)")
        parser.add_argument("--json", action="store_true", help="print JSON")
    else:
        parser.add_argument("--name", required=True, help="model name")
    if path == "models promote":
        parser.add_argument("--version", required=True, help="version to make current")


def _describe(repo: ModelRepository, name: str) -> list[dict]:
    current = repo.current_version(name)
    rows = []
    for version in repo.list_versions(name):
        row: dict = {"name": name, "version": version, "current": version == current}
        try:
            m = read_manifest(repo.version_dir(name, version))
        except ArtifactError as exc:
            row["error"] = str(exc)
        else:
            light = m.metrics.get("light")
            auc = light.get("auc") if isinstance(light, dict) else None
            row.update(
                kind=m.kind, stage=m.stage, task=m.task, quantization=m.quantization,
                params=m.params, created_at=m.created_at, test_auc=auc,
            )  # fmt: skip
        rows.append(row)
    return rows


def _list(args: argparse.Namespace, repo: ModelRepository) -> int:
    names = [args.name] if args.name else repo.names()
    rows = [row for name in names for row in _describe(repo, name)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in {repo.root}")
        return 0
    print(f"{'':1} {'name':<12} {'version':<20} {'kind':<9} {'quant':<5} {'params':>10}  test_auc")
    for r in rows:
        mark = "*" if r["current"] else " "
        if "error" in r:
            print(f"{mark} {r['name']:<12} {r['version']:<20} BROKEN: {r['error']}")
            continue
        auc = f"{r['test_auc']:.4f}" if isinstance(r["test_auc"], float) else "-"
        print(
            f"{mark} {r['name']:<12} {r['version']:<20} {r['kind']:<9} {r['quantization']:<5} "
            f"{r['params']:>10,}  {auc}"
        )
    print("(* = current)")
    return 0


def run(args: argparse.Namespace) -> int:
    repo = ModelRepository(args.repo)
    try:
        if args.command_path == "models list":
            return _list(args, repo)
        if args.command_path == "models promote":
            repo.promote(args.name, args.version)
            print(f"{args.name}: current -> {args.version}")
            return 0
        if args.command_path == "models rollback":
            before = repo.current_version(args.name)
            after = repo.rollback(args.name)
            print(f"{args.name}: current {before} -> {after}")
            return 0
    except (RepositoryError, ArtifactError) as exc:
        print(f"error: {exc}")
        return 1
    raise ValueError(f"unknown command {args.command_path!r}")

"""``rocketrank models list|promote|rollback|keygen``: manage a model repository.

``rollback`` is the repository's writer for rollbacks (the service mounts the
repository read-only): ``--name`` may repeat, and every named model moves back or
none does; ``--expect-current [NAME=]VERSION`` makes a retry a no-op.
``keygen`` writes the ed25519 key pair artifacts are signed with.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.contract.manifest import ArtifactError, read_manifest
from models.contract.repository import ModelRepository
from models.contract.repository_reader import RepositoryError, version_sort_key
from models.contract.signing import SigningError, generate_key_pair


def add_arguments_for(path: str, parser: argparse.ArgumentParser) -> None:
    if path == "models keygen":
        parser.add_argument(
            "--out", required=True, type=Path, help="folder for signing.key (keep it secret)"
        )
        parser.add_argument(
            "--public-out", type=Path, default=None, help="folder for signing.pub (default --out)"
        )
        parser.add_argument(
            "--if-missing", action="store_true", help="do nothing when the key pair exists"
        )
        return
    parser.add_argument("--repo", required=True, type=Path, help="model repository root")
    if path == "models rollback":
        parser.add_argument(
            "--name", required=True, action="append", help="model name (repeat: all or none)"
        )
        parser.add_argument(
            "--expect-current",
            action="append",
            default=[],
            metavar="[NAME=]VERSION",
            help="roll back only from this version; if it already moved, do nothing",
        )
        return
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


def _expected(names: list[str], values: list[str]) -> dict[str, str | None]:
    expected: dict[str, str | None] = {}
    for value in values:
        name, sep, version = value.rpartition("=")
        if not sep:
            if len(names) != 1:
                raise RepositoryError("--expect-current needs NAME=VERSION with several --name")
            name = names[0]
        if name not in names:
            raise RepositoryError(f"--expect-current names {name!r}, which no --name gives")
        version_sort_key(version)  # a placeholder left in the rollback Job moves nothing
        expected[name] = version
    return expected


def _rollback(args: argparse.Namespace, repo: ModelRepository) -> int:
    before = {name: repo.current_version(name) for name in args.name}
    after = repo.rollback_all(args.name, expect_current=_expected(args.name, args.expect_current))
    for name in args.name:
        if after[name] == before[name]:
            print(f"{name}: current is {after[name]}, not the expected version: nothing to do")
        else:
            print(f"{name}: current {before[name]} -> {after[name]}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from models.contract.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE

    private, public = args.out / PRIVATE_KEY_FILE, (args.public_out or args.out) / PUBLIC_KEY_FILE
    if args.if_missing and private.is_file() and public.is_file():
        print(f"key pair exists: {private}, {public}")
        return 0
    try:
        private, public = generate_key_pair(args.out, args.public_out)
    except (SigningError, OSError) as exc:
        print(f"error: {exc}")
        return 1
    print(f"private key (export --signing-key / ROCKETRANK_SIGNING_KEY): {private}")
    print(f"public key (service ROCKETRANK_ARTIFACT_PUBLIC_KEY): {public}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command_path == "models keygen":
        return _keygen(args)
    repo = ModelRepository(args.repo)
    try:
        if args.command_path == "models list":
            return _list(args, repo)
        if args.command_path == "models promote":
            repo.promote(args.name, args.version)
            print(f"{args.name}: current -> {args.version}")
            return 0
        if args.command_path == "models rollback":
            return _rollback(args, repo)
    except (RepositoryError, ArtifactError) as exc:
        print(f"error: {exc}")
        return 1
    raise ValueError(f"unknown command {args.command_path!r}")

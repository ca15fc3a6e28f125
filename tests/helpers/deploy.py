"""Helpers for the deployment checks: offline JSON-schema validation with the schemas
that two test dependencies ship in their wheels (``check-jsonschema``: the Compose
Specification; ``kubernetes-validate``: the Kubernetes OpenAPI schemas), the real
``rocketrank`` argument parsers, the service's settings, and small readers for
Dockerfiles and the trainer script.

No Docker engine or Kubernetes cluster exists where these tests run, so the files
are kept correct by schemas and by cross-references between them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from tests.helpers.repo import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The Kubernetes version whose strict schemas (unknown fields are errors) the manifests
# must pass; kubernetes-validate ships 1.28 to 1.37.
K8S_VERSION = "1.33.0"
COMPOSE_FILE = ROOT / "docker-compose.yml"
TRAIN_SCRIPT = DEPLOY / "docker" / "train_and_export.sh"
SERVICE_PORT = 8000
SERVICE_UID = 10001


# ---------------------------------------------------------------- schemas


def schema_errors(schema: dict, instance: Any) -> list[str]:
    """Every violation of ``schema`` by ``instance``, as "path: message" lines."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


@cache
def compose_schema() -> dict:
    """The Compose Specification schema as check-jsonschema ships it (``vendor.compose-spec``)."""
    return get_builtin_schema("vendor.compose-spec")


def k8s_errors(manifest: dict) -> list[str]:
    """Violations of the strict Kubernetes schema of ``manifest``, through kubernetes-validate.

    kubernetes-validate stops at the first violation, so the list holds at most one
    "path: message" line; a kind or apiVersion it has no schema for is an error too.
    """
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def k8s_manifests(pattern: str = "*.yaml") -> list[tuple[Path, dict]]:
    """(file, document) for every Kubernetes object in deploy/k8s (kustomization excluded).

    ``pattern`` ``"*.yaml"`` is the kustomization's folder; ``"**/*.yaml"`` adds the
    subfolders (distributed training, rollback).
    """
    docs = []
    for path in sorted(K8S.glob(pattern)):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


# ---------------------------------------------------------------- the service's settings


def service_setting_env_names() -> set[str]:
    """``ROCKETRANK_<FIELD>`` for every field of the service's Settings."""
    from service.settings import ENV_PREFIX, Settings

    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def settings_from_env(env: dict[str, str]):
    """The service's Settings built from ``env`` alone (validates every value's type)."""
    from service.settings import ENV_PREFIX, Settings

    values = {key[len(ENV_PREFIX) :].lower(): value for key, value in env.items()}
    return Settings.model_validate(values)


# ---------------------------------------------------------------- the rocketrank CLI


class CliError(AssertionError):
    """A command line the real ``rocketrank`` parser refuses."""


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``rocketrank ARGV`` with the subcommand's own parser, without running it."""
    from rocketrank.cli import COMMANDS

    by_length = sorted(COMMANDS, key=lambda c: -len(c[0].split()))
    match = next((c for c in by_length if argv[: len(c[0].split())] == c[0].split()), None)
    if match is None:
        raise CliError(f"no rocketrank command for {argv}")
    path, module_name, _ = match
    words = path.split()
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"rocketrank {path}", exit_on_error=False)
    if hasattr(module, "add_arguments_for"):
        module.add_arguments_for(path, parser)
    else:
        module.add_arguments(parser)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(argv[len(words) :])
    except (argparse.ArgumentError, SystemExit) as exc:
        raise CliError(f"rocketrank {' '.join(argv)}: {exc} {stderr.getvalue()}") from exc


# ---------------------------------------------------------------- trainer script


def script_defaults(path: Path = TRAIN_SCRIPT) -> dict[str, str]:
    """``VAR="${VAR:-default}"`` assignments of a shell script: variable -> default."""
    pattern = re.compile(r'^(\w+)="\$\{\1:-([^}]*)\}"$', re.MULTILINE)
    return dict(pattern.findall(path.read_text()))


def script_rocketrank_calls(path: Path = TRAIN_SCRIPT) -> list[list[str]]:
    """Every ``rocketrank ...`` command of a shell script, variables replaced by defaults."""
    text = path.read_text().replace("\\\n", " ")
    values = {**script_defaults(path), "run": "/runs/coarse-20260101T000000Z", "stage": "coarse"}
    calls = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("rocketrank "):
            continue
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], line)
        calls.append(shlex.split(line)[1:])
    return calls


# ---------------------------------------------------------------- Dockerfiles


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str
    stage: int  # index of the FROM stage it belongs to


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile (continuations joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    instructions, stage = [], -1
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str]:
    """``["a", "b"]`` (JSON exec form) -> list; shell form is refused."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


def iter_env(instructions: list[Instruction]) -> Iterator[tuple[str, str]]:
    """``ENV`` key/value pairs (``KEY=value`` form)."""
    for ins in instructions:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                yield key, value

"""Signed artifacts, statically: the service's loader call passes the configured
key and never allows unsigned artifacts by a constant; in ``load_artifact`` the
signature check comes before the manifest is parsed and before any model loader
(``torch.jit.load``, or ``torch.export.load`` after the archive check);
the shipped configuration refuses unsigned artifacts.

The behaviour itself (tampered manifest, wrong key, missing signature, an
aten::from_file module with valid checksums) is tested in
``tests/models/contract/test_artifact_signature.py`` and, through the service,
``tests/suites/reliability/test_repository_kill.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from service.settings import Settings
from tests.helpers.deploy import COMPOSE_FILE, K8S
from tests.helpers.repo import ROOT
from tests.suites.security.test_source import calls, source_files


def test_every_service_load_passes_the_key_and_no_constant_allow_unsigned():
    found = []
    for path in source_files():
        if path.relative_to(ROOT).parts[0] != "service":
            continue
        for name, call in calls(ast.parse(path.read_text())):
            if name.split(".")[-1] != "load_artifact":
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            assert "public_key" in keywords, f"{path}:{call.lineno} loads without a key"
            allow = keywords.get("allow_unsigned")
            assert allow is not None and not isinstance(allow, ast.Constant), (
                f"{path}:{call.lineno}: allow_unsigned must come from the settings"
            )
            found.append(path.name)
    assert found == ["registry.py"]


def _call_lines(function: ast.FunctionDef, name: str) -> list[int]:
    return [c.lineno for n, c in calls(function) if n.split(".")[-1] == name]


def _function(path: Path, name: str) -> ast.FunctionDef:
    tree = ast.parse(path.read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def test_the_signature_is_checked_before_parsing_and_before_any_model_loader():
    contract = ROOT / "models" / "contract"
    load = _function(contract / "artifact.py", "load_artifact")
    (signature,) = _call_lines(load, "check_signature")
    (parse,) = _call_lines(load, "_parse_manifest")
    (verified,) = _call_lines(load, "_read_verified")
    loaders = _call_lines(load, "load_scorer") + _call_lines(load, "_load_torchscript")
    assert len(loaders) == 2 and signature < parse < verified < min(loaders)
    # the deserialisers themselves are called only inside those loaders
    (jit,) = [c.lineno for n, c in calls(_function(contract / "artifact.py", "_load_torchscript"))
              if n == "torch.jit.load"]  # fmt: skip
    assert jit
    program = _function(contract / "programs.py", "load_program")
    (archive,) = _call_lines(program, "check_archive")
    (export,) = [c.lineno for n, c in calls(program) if n == "torch.export.load"]
    assert archive < export
    for path in (contract / "artifact.py", contract / "programs.py"):
        names = [n for n, _ in calls(ast.parse(path.read_text()))]
        assert names.count("torch.jit.load") + names.count("torch.export.load") == 1, path


def test_unsigned_artifacts_are_refused_by_default_and_in_the_shipped_deployments():
    assert Settings.model_fields["allow_unsigned_artifacts"].default is False
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert "ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS" not in env, name
    for path in K8S.rglob("*.yaml"):
        assert "ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS" not in path.read_text(), path
        assert "allow_unsigned_artifacts" not in path.read_text().lower(), path

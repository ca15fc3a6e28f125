"""Signed artifacts, statically: the service's loader call passes the configured
key and never allows unsigned artifacts by a constant; in ``load_artifact`` the
signature check comes before the manifest is parsed and before ``torch.jit.load``;
the shipped configuration refuses unsigned artifacts.

The behaviour itself (tampered manifest, wrong key, missing signature, an
aten::from_file module with valid checksums) is tested in
``tests/models/contract/test_artifact_signature.py`` and, through the service,
``tests/suites/reliability/test_repository_kill.py``.
"""

from __future__ import annotations

import ast

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


def test_the_signature_is_checked_before_parsing_and_before_torch_jit_load():
    tree = ast.parse((ROOT / "models" / "contract" / "artifact.py").read_text())
    load = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "load_artifact"
    )
    (signature,) = _call_lines(load, "check_signature")
    (parse,) = _call_lines(load, "_parse_manifest")
    (jit,) = [c.lineno for n, c in calls(load) if n == "torch.jit.load"]
    assert signature < parse < jit


def test_unsigned_artifacts_are_refused_by_default_and_in_the_shipped_deployments():
    assert Settings.model_fields["allow_unsigned_artifacts"].default is False
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert "ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS" not in env, name
    for path in K8S.rglob("*.yaml"):
        assert "ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS" not in path.read_text(), path
        assert "allow_unsigned_artifacts" not in path.read_text().lower(), path

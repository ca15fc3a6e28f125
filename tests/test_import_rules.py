"""The layering rules of the design doc, checked on the source (AST), so a
violation fails ``make test`` and not only ``make lint``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def test_models_import_nothing_of_the_project() -> None:
    bad = [
        (f, m) for f, m in _imports("models") if _top(m) in {"training", "service", "rocketrank"}
    ]
    assert bad == []


def test_training_never_imports_service() -> None:
    bad = [(f, m) for f, m in _imports("training") if _top(m) in {"service", "rocketrank"}]
    assert bad == []


def test_service_imports_only_the_feature_contract() -> None:
    bad = [
        (f, m)
        for f, m in _imports("service")
        if _top(m) in {"training", "rocketrank"}
        or (_top(m) == "models" and not m.startswith("models.contract"))
    ]
    assert bad == []


def test_models_contract_needs_only_numpy_torch_cryptography_and_stdlib() -> None:
    # cryptography: the ed25519 artifact signatures (models/contract/signing.py), which the
    # service must verify without importing anything else of the project
    allowed_third_party = {"numpy", "torch", "cryptography"}
    import sys

    stdlib = set(sys.stdlib_module_names)
    bad = [
        (f, m)
        for f, m in _imports("models/contract")
        if _top(m) not in stdlib | allowed_third_party | {"models", "__future__"}
    ]
    assert bad == []

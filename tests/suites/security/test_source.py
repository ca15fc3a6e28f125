"""Static security rules over the project's own Python source (parsed, not grepped):

* nothing is unpickled: every ``torch.load`` passes ``weights_only=True``; no
  ``pickle``/``dill``/``joblib``/``cloudpickle`` loads, no ``pandas.read_pickle``,
  no ``numpy.load(..., allow_pickle=True)``, no ``yaml.load`` (only
  ``yaml.safe_load``), no ``eval``/``exec``;
* the admin bearer token is compared with ``hmac.compare_digest``, never ``==``.

Verification of artifact checksums before ``torch.jit.load`` is tested in
``tests/models/contract/test_artifact_verify.py`` (a flipped byte is refused before the model loads;
a pickled module with valid checksums is refused); non-root containers in
``tests/suites/deploy/test_docker.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT

PACKAGES = ("models", "training", "service", "rocketrank", "deploy", "tests")
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def source_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if ".venv" not in p.parts]


def dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield dotted(node.func), node


def keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def scan(source: str, label: str) -> list[str]:
    """Unsafe calls in ``source`` as ``label:line: what`` strings."""
    found = []
    for name, call in calls(ast.parse(source)):
        where = f"{label}:{call.lineno}: {name}"
        head, _, last = name.rpartition(".")
        if name == "torch.load" and not keyword_is(call, "weights_only", True):
            found.append(f"{where} without weights_only=True")
        elif (
            (head in UNPICKLERS and last in {"load", "loads", "Unpickler", "open"})
            or last == "read_pickle"
            or name in {"eval", "exec"}
        ):
            found.append(where)
        elif last == "load" and head in {"np", "numpy"} and keyword_is(call, "allow_pickle", True):
            found.append(f"{where} with allow_pickle=True")
        elif head == "yaml" and last in {"load", "load_all", "unsafe_load", "full_load"}:
            found.append(f"{where} (use yaml.safe_load)")
    return found


def test_the_scan_sees_the_project_and_catches_each_pattern(tmp_path):
    files = source_files()
    assert len(files) > 50
    assert ROOT / "models" / "contract" / "artifact.py" in files
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pickle, torch, yaml, numpy as np, pandas as pd\n"
        "torch.load('x')\n"
        "torch.load('x', weights_only=False)\n"
        "torch.load('x', weights_only=True)\n"
        "pickle.loads(b'')\n"
        "yaml.load('a: 1')\n"
        "yaml.safe_load('a: 1')\n"
        "np.load('x', allow_pickle=True)\n"
        "np.load('x')\n"
        "pd.read_pickle('x')\n"
        "eval('1')\n"
    )
    lines = [int(f.split(":")[1]) for f in scan(probe.read_text(), "probe.py")]
    assert lines == [2, 3, 5, 6, 8, 10, 11]


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_is_unpickled_and_no_unsafe_loader_is_used(path):
    assert scan(path.read_text(), str(path.relative_to(ROOT))) == []


def test_every_torch_load_in_the_project_is_weights_only():
    # The positive side of the rule: the project does load checkpoints and runs.
    loads = [
        (path, call)
        for path in source_files()
        for name, call in calls(ast.parse(path.read_text()))
        if name == "torch.load"
    ]
    assert len(loads) >= 3
    assert all(keyword_is(call, "weights_only", True) for _, call in loads)


def test_the_admin_token_is_compared_in_constant_time():
    tree = ast.parse((ROOT / "service" / "api" / "deps.py").read_text())
    function = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "require_admin"
    )
    names = [name for name, _ in calls(function)]
    assert "hmac.compare_digest" in names
    for node in ast.walk(function):
        if isinstance(node, ast.Compare):
            compared = [dotted(x) for x in (node.left, *node.comparators)]
            assert not any(
                "token" in c or "supplied" in c
                for c in compared
                if any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)
            ), ast.unparse(node)

"""The layout's size rules (issue 12): small modules and short functions.

No module in ``models/``, ``training/``, ``service/`` or ``bench/`` is over
``MAX_MODULE_LINES``; no function is over ``MAX_FUNCTION_LINES`` unless the comment
block right above its ``def`` (or its first decorator) has a line starting with
``# Long`` that says why it must be long, e.g. ``# Long (~85 lines): ...``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "training", "service", "bench")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _long_functions(path: Path) -> list[str]:
    """Names (with line numbers) of the functions in ``path`` over the limit, unexcused."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        comments = []
        i = first - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            comments.append(lines[i].strip())
            i -= 1
        if not any(c.lower().startswith("# long") for c in comments):
            found.append(f"{node.name} (line {node.lineno}, {length} lines)")
    return found


def test_the_rules_see_the_tree():
    assert len(_modules()) > 100, "the package folders were not found"


def test_no_module_is_over_the_limit():
    over = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_over_the_limit_without_a_reason(package):
    over = {
        str(p.relative_to(ROOT)): names
        for p in _modules()
        if p.relative_to(ROOT).parts[0] == package and (names := _long_functions(p))
    }
    assert not over, (
        f"functions over {MAX_FUNCTION_LINES} lines without a '# Long ...: why' comment "
        f"above them: {over}"
    )


def test_the_function_rule_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    bad = tmp_path / "bad.py"
    bad.write_text(f"def f():\n{body}\n")
    assert _long_functions(bad) == [f"f (line 1, {MAX_FUNCTION_LINES + 1} lines)"]
    excused = tmp_path / "excused.py"
    reason = "# Long (81 lines): one table of cases,\n# read top to bottom\n"
    excused.write_text(f"{reason}def f():\n{body}\n")
    assert _long_functions(excused) == []

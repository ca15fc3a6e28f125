"""How the project is installed: the Makefile asks for torch's CPU build (and still
installs offline), the `[serve]`/`[train]` extras split what the service image
carries from what training needs, and the license is an SPDX string."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers.deploy import ROOT
from tests.helpers.repo import IN_CI

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def _fake_venv(tmp_path: Path, index_reachable: bool) -> tuple[Path, Path]:
    """A venv whose python answers the index probe as told and whose pip logs its args."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "pip.log"
    (bin_dir / "python").write_text(f"#!/bin/sh\nexit {0 if index_reachable else 1}\n")
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    return tmp_path / "venv", log


def _run_install(tmp_path: Path, index_reachable: bool) -> list[str]:
    if shutil.which("make") is None:
        if IN_CI:
            pytest.fail("make is not installed (the README's commands need it)")
        pytest.skip("make is not installed")
    venv, log = _fake_venv(tmp_path, index_reachable)
    # Copies, so the sentinel files the rule depends on are older than the target.
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run(
        ["make", "-s", f"VENV={venv}", f"{venv}/.installed"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    return log.read_text().splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the +cpu wheels are Linux's")
def test_make_install_takes_torch_from_the_cpu_index_when_it_answers(tmp_path: Path) -> None:
    calls = _run_install(tmp_path, index_reachable=True)
    torch_call, project_call = calls
    assert f"--extra-index-url {CPU_INDEX}" in torch_call
    assert torch_call.endswith("torch==2.13.0+cpu")
    assert "-c constraints.txt" in torch_call
    assert project_call.endswith("-e .[serve,train]") and "-c constraints.txt" in project_call


def test_make_install_falls_back_to_the_plain_pin_offline(tmp_path: Path) -> None:
    """Here the CPU index is unreachable; pip's configured local wheel folder has
    torch 2.13.0 (the CPU build), so the plain pin must be what is asked for."""
    calls = _run_install(tmp_path, index_reachable=False)
    torch_call, project_call = calls
    assert CPU_INDEX not in torch_call
    assert torch_call.endswith("torch==2.13.0") and "-c constraints.txt" in torch_call
    assert project_call.endswith("-e .[serve,train]")


def test_license_is_an_spdx_string_for_setuptools_77() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    (setuptools,) = [Requirement(r) for r in build["requires"] if r.startswith("setuptools")]
    # SPDX strings are understood from setuptools 77 on (earlier ones reject them)
    assert setuptools.specifier.contains("77") and not setuptools.specifier.contains("76.1")


def _third_party_imports(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"models", "__future__"}


def test_base_dependencies_are_what_models_import() -> None:
    # models/ (and so models.contract, which the service and training both load) must
    # install from the base dependencies alone
    assert _names(PROJECT["dependencies"]) == _third_party_imports(ROOT / "models")
    assert {"torch", "numpy", "cryptography"} <= _names(PROJECT["dependencies"])


def test_serve_extra_carries_no_training_or_dev_server_packages() -> None:
    serve = _names(PROJECT["optional-dependencies"]["serve"])
    assert {"fastapi", "uvicorn", "httptools", "uvloop", "pydantic-settings"} <= serve
    assert not serve & {"matplotlib", "tqdm", "pyyaml", "watchfiles", "websockets"}
    # uvicorn without [standard]: that extra pulls watchfiles and websockets
    uvicorn = next(
        Requirement(r) for r in PROJECT["optional-dependencies"]["serve"] if r.startswith("uvicorn")
    )
    assert not uvicorn.extras


def test_train_extra_has_what_training_imports() -> None:
    train = _names(PROJECT["optional-dependencies"]["train"])
    assert {"pandas", "pyarrow", "pyyaml", "tqdm", "matplotlib"} <= train


_BLOCKED_IMPORT = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the [serve] extra")
sys.meta_path.insert(0, Block())
import service.main, service.app, service.commands.serve, service.commands.features
import rocketrank.cli
"""


def test_the_service_imports_nothing_outside_base_and_serve() -> None:
    """What the service image would lack (the [train] and test packages) is blocked;
    the service's modules still import."""
    installable = _names(PROJECT["dependencies"]) | _names(
        PROJECT["optional-dependencies"]["serve"]
    )
    blocked = sorted({"matplotlib", "tqdm", "yaml", "training", "bench", "httpx"} - installable)
    code = _BLOCKED_IMPORT.format(blocked=blocked)
    env = {**os.environ, "ROCKETRANK_REPO": "/nonexistent", "ROCKETRANK_FEATURES_DIR": "/tmp"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr

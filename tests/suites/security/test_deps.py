"""Dependencies are pinned: ``constraints.txt`` holds an exact ``name==version`` for
every direct dependency of ``pyproject.toml`` (runtime, test and dev extras),
each pin satisfies the project's own range and is what this environment runs,
and torch is pinned to the CPU release the Makefile installs."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers.repo import ROOT

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")


def pins() -> dict[str, str]:
    result: dict[str, str] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt:{number}: not an exact name==version pin: {line!r}"
        name = canonicalize_name(match["name"])
        assert name not in result, f"constraints.txt:{number}: {name} pinned twice"
        result[name] = match["version"]
    return result


def direct_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += [r for r in extra if not r.startswith("rocketrank")]
    return [Requirement(r) for r in lines]


def test_constraints_pin_the_torch_cpu_release_and_not_the_project():
    pinned = pins()
    assert pinned["torch"] == "2.13.0"
    assert "rocketrank" not in pinned


@pytest.mark.parametrize("req", direct_requirements(), ids=str)
def test_each_direct_dependency_is_pinned_within_its_range_as_installed(req):
    if req.marker is not None and not req.marker.evaluate():
        pytest.skip(f"{req} does not apply on this platform")
    pinned = pins()
    name = canonicalize_name(req.name)
    assert name in pinned, f"{req.name} is not pinned in constraints.txt"
    version = Version(pinned[name])
    assert req.specifier.contains(version, prereleases=True), f"{name}=={version} vs {req}"
    installed = Version(metadata.version(req.name))
    # the CPU wheel's local label (+cpu) is not part of the pin
    assert installed.public == version.public, f"{name}: installed {installed}, pinned {version}"

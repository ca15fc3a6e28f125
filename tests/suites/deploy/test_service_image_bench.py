"""The service image leaves the benchmark harness out: its build context excludes
``bench/`` and its Dockerfile copies no benchmark code (issue 12)."""

from __future__ import annotations

import fnmatch

from tests.helpers.repo import ROOT

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.service"
DOCKERIGNORE = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")


def _patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _allowed(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = (pattern[1:] if negate else pattern).rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            allowed = negate
    return allowed


def _copy_sources() -> list[str]:
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_service_build_context_excludes_the_benchmark_harness() -> None:
    patterns = _patterns()
    for path in ("bench", "bench/serve/run.py", "bench/common/machine.py"):
        assert not _allowed(patterns, path), f"{path} would be in the service build context"
    assert _allowed(patterns, "service/app.py")


def test_service_dockerfile_copies_no_benchmark_code() -> None:
    sources = _copy_sources()
    assert "service" in sources
    assert not [s for s in sources if s.rstrip("/").split("/")[0] == "bench"]
    # The harness used to live inside the service package, which the image copies whole.
    assert not (ROOT / "service" / "bench").exists()

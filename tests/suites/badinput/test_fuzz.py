"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

Every operation of ``/openapi.json`` gets several hundred generated requests,
valid and invalid by the schema, sent over real HTTP to ``rocketrank serve``
(admin token configured, so the admin endpoints exist). Each answer must not
be a 5xx, must use a documented status code and content type, and its body
must conform to the documented response schema.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.helpers import reliability as rf
from tests.helpers import service as sf

pytestmark = pytest.mark.slow
# schemathesis is a test dependency; skip (not error at collection) where it is missing
schemathesis = pytest.importorskip("schemathesis")
GenerationMode = schemathesis.GenerationMode
checks = schemathesis.checks

TOKEN = "fuzz-token"
EXAMPLES = 300
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    world = sf.make_repo(tmp_path_factory.mktemp("fuzz"))
    args = ["--repo", str(world["repo"]), "--features", str(world["data"])]
    env = {"ROCKETRANK_ADMIN_TOKEN": TOKEN, "ROCKETRANK_MAX_CANDIDATES": "2000"}
    with rf.running(args, env) as proc:
        yield proc


@pytest.fixture(scope="module")
def api_schema(server) -> Any:
    return schemathesis.openapi.from_url(server.base + "/openapi.json")


def test_the_fuzzed_operations_are_every_operation(api_schema):
    documented = {
        (method.upper(), path)
        for path, item in api_schema.raw_schema["paths"].items()
        for method in item
    }
    assert documented == set(OPERATIONS)


# schemathesis.pytest.from_fixture needs pytest < 9 (it reads Function._nodeid), so the
# operations are listed here and each one's schemathesis strategy drives hypothesis.
OPERATIONS = [
    ("POST", "/v1/rank"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/admin/reload"),
    ("POST", "/admin/rollback"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_or_off_schema(api_schema, method, path):
    operation = api_schema[path][method]
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )
    seen: list[int] = []

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: Any) -> None:
        # the admin endpoints are fuzzed behind the right token too
        headers = {"Authorization": f"Bearer {TOKEN}"} if path.startswith("/admin") else None
        response = case.call(headers=headers, timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text
        assert str(sf.ROOT) not in response.text

    fuzz()
    # Operations without inputs have a single possible request; hypothesis stops there.
    assert len(seen) >= (EXAMPLES // 2 if path == "/v1/rank" else 1)
    rf.record_figure(
        "fuzz",
        operation=f"{method} {path}",
        cases=len(seen),
        statuses=dict(sorted(Counter(seen).items())),
    )

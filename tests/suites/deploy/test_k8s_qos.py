"""The QoS class the docs and comments claim for a workload is the class Kubernetes
derives from its resources (requests == limits for cpu and memory in every
container = Guaranteed)."""

from __future__ import annotations

import re

import pytest

from tests.helpers.deploy import DEPLOY, ROOT, k8s_manifests

K8S = DEPLOY / "k8s"
WORKLOADS = [(path, doc) for path, doc in k8s_manifests() if doc["kind"] == "Deployment"]
# the workloads whose manifest says they run in the Guaranteed QoS class
GUARANTEED = [(path, doc) for path, doc in WORKLOADS if "Guaranteed" in path.read_text()]


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``, ``512M``) as a number."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    assert match, f"not a quantity: {text!r}"
    number, unit = match.groups()
    return float(number) * (units[unit] if unit else 1.0)


def qos_class(pod_spec: dict) -> str:
    """Kubernetes' rule: Guaranteed when every container (init ones included) has
    cpu and memory limits with requests equal to them (an absent request defaults
    to the limit); BestEffort when none sets any; Burstable otherwise."""
    containers = pod_spec.get("initContainers", []) + pod_spec["containers"]
    if not any(c.get("resources", {}).get(k) for c in containers for k in ("requests", "limits")):
        return "BestEffort"
    for container in containers:
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        for name in ("cpu", "memory"):
            if name not in limits:
                return "Burstable"
            if _quantity(requests.get(name, limits[name])) != _quantity(limits[name]):
                return "Burstable"
    return "Guaranteed"


def test_qos_rule_on_known_cases() -> None:
    both = {"cpu": "2", "memory": "2Gi"}
    assert qos_class({"containers": [{"resources": {"requests": both, "limits": both}}]}) == (
        "Guaranteed"
    )
    assert qos_class({"containers": [{"resources": {"limits": both}}]}) == "Guaranteed"
    burst = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": both}
    assert qos_class({"containers": [{"resources": burst}]}) == "Burstable"
    same = {"requests": {"cpu": "2000m", "memory": "2048Mi"}, "limits": both}
    assert qos_class({"containers": [{"resources": same}]}) == "Guaranteed"
    assert qos_class({"containers": [{}]}) == "BestEffort"


def test_the_service_deployment_claims_guaranteed_qos() -> None:
    assert any(path.name == "deployment.yaml" for path, _ in GUARANTEED), [
        p.name for p, _ in WORKLOADS
    ]


@pytest.mark.parametrize(("path", "doc"), GUARANTEED, ids=[p.name for p, _ in GUARANTEED])
def test_a_workload_said_to_be_guaranteed_is(path, doc) -> None:
    assert qos_class(doc["spec"]["template"]["spec"]) == "Guaranteed", path.name


def test_the_deploy_docs_state_the_deployment_resources_and_class() -> None:
    (deployment,) = [doc for path, doc in WORKLOADS if path == K8S / "deployment.yaml"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    limits = container["resources"]["limits"]
    cpu, memory = _quantity(limits["cpu"]), _quantity(limits["memory"]) / 2**30
    docs = (ROOT / "docs" / "DEPLOY.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| `deployment.yaml` |"))
    claimed = f"{cpu:g} CPU / {memory:g} GiB, requests = limits (Guaranteed QoS)"
    assert claimed in row, row
    assert qos_class(spec) == "Guaranteed"
    # the README's copy of the deploy text must not contradict it
    readme = (ROOT / "README.md").read_text()
    assert "Burstable" not in readme and "1–2 GiB" not in readme + docs

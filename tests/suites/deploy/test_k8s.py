"""deploy/k8s: every manifest valid against the strict Kubernetes 1.33 schema
(as kubernetes-validate ships it; unknown fields are errors) and the objects wired
to each other, to the image and to the service's settings."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.helpers.deploy import (
    DEPLOY,
    K8S,
    SERVICE_PORT,
    SERVICE_UID,
    TRAIN_SCRIPT,
    k8s_errors,
    k8s_manifests,
    parse_cli,
    script_defaults,
    service_setting_env_names,
    settings_from_env,
)
from tests.helpers.observability import require_tool, run_tool

MANIFESTS = k8s_manifests()
EVERY_MANIFEST = k8s_manifests("**/*.yaml")


def _one(kind: str) -> dict:
    found = [doc for _, doc in MANIFESTS if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def _pod_spec(kind: str) -> dict:
    obj = _one(kind)
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("path", "manifest"),
    EVERY_MANIFEST,
    ids=[f"{p.relative_to(K8S)}:{d['kind']}" for p, d in EVERY_MANIFEST],
)
def test_manifest_matches_the_kubernetes_schema(path: Path, manifest: dict) -> None:
    assert k8s_errors(manifest) == []


def test_every_manifest_file_is_checked() -> None:
    checked = {p for p, _ in EVERY_MANIFEST}
    assert checked == set(K8S.glob("**/*.yaml")) - {K8S / "kustomization.yaml"}
    assert {p.parent.name for p in checked} >= {"k8s", "distributed", "rollback"}


def test_the_schema_check_is_strict() -> None:
    deployment = copy.deepcopy(_one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    assert any("httpGett" in e for e in k8s_errors(deployment))
    deployment = copy.deepcopy(_one("Deployment"))
    deployment["spec"]["replicas"] = "two"
    assert any("replicas" in e for e in k8s_errors(deployment))
    deployment = copy.deepcopy(_one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["memory"] = {"gi": 2}
    assert any("limits/memory" in e for e in k8s_errors(deployment))


def test_a_kind_without_a_schema_is_an_error() -> None:
    deployment = copy.deepcopy(_one("Deployment"))
    deployment["apiVersion"] = "apps/v1beta9"
    (error,) = k8s_errors(deployment)
    assert "apps/v1beta9" in error


def test_every_kind_the_issue_asks_for_is_there() -> None:
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "CronJob",
        "ConfigMap",
        "PersistentVolumeClaim",
    } <= kinds


def test_kustomization_lists_every_manifest_and_one_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    namespace = _one("Namespace")["metadata"]["name"]
    assert kustomization["namespace"] == namespace
    for path, doc in MANIFESTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, path.name


def test_deployment_probes_resources_and_security() -> None:
    spec = _pod_spec("Deployment")
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][key]), key
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == SERVICE_UID
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_deployment_serves_on_the_scraped_and_probed_port() -> None:
    deployment = _one("Deployment")
    (container,) = _pod_spec("Deployment")["containers"]
    args = parse_cli(container["args"])
    (port,) = container["ports"]
    assert args.port == port["containerPort"] == SERVICE_PORT
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(SERVICE_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"], probe


def test_configmap_is_a_valid_service_configuration() -> None:
    config = _one("ConfigMap")
    env = config["data"]
    assert set(env) <= service_setting_env_names()
    settings = settings_from_env(env)
    (container,) = _pod_spec("Deployment")["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    for item in container.get("env", []):
        assert item["name"] in service_setting_env_names(), item["name"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(settings.repo)]["readOnly"] is True


def test_volumes_refer_to_declared_claims() -> None:
    claims = {
        doc["metadata"]["name"] for _, doc in MANIFESTS if doc["kind"] == "PersistentVolumeClaim"
    }
    for kind in ("Deployment", "CronJob"):
        spec = _pod_spec(kind)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, (kind, mount["name"])
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    service_models = {v["name"]: v for v in _pod_spec("Deployment")["volumes"]}["models"][
        "persistentVolumeClaim"
    ]["claimName"]
    trainer_models = {v["name"]: v for v in _pod_spec("CronJob")["volumes"]}["models"]
    assert trainer_models["persistentVolumeClaim"]["claimName"] == service_models


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == SERVICE_PORT and port["targetPort"] == "http"
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # A node drain must be able to evict one pod while the HPA floor still serves.
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert deployment["spec"]["replicas"] >= hpa["spec"]["minReplicas"]


def test_training_cronjob_runs_the_trainer_image_as_non_root() -> None:
    cronjob = _one("CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    spec = _pod_spec("CronJob")
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["image"].startswith("rocketrank-trainer:")
    defaults = script_defaults(TRAIN_SCRIPT)
    for item in container["env"]:
        if item["name"] == "ROCKETRANK_SIGNING_KEY":
            continue  # read by `rocketrank export` itself (tests below)
        assert item["name"] in defaults, f"{item['name']} is not read by train_and_export.sh"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {defaults["DATA_DIR"], defaults["RUNS_DIR"], defaults["MODEL_REPO"]} <= mounts


def test_kubernetes_prometheus_config_keeps_the_job_the_dashboard_uses(tmp_path: Path) -> None:
    """promtool checks everything but the pod discovery (Debian builds Prometheus
    without Kubernetes service discovery), which is swapped for a static target."""
    promtool = require_tool("promtool")
    source = DEPLOY / "prometheus" / "prometheus-kubernetes.yml"
    config = yaml.safe_load(source.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "rocketrank"
    keep = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert (
        keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
        == pod_labels["app.kubernetes.io/name"]
    )
    assert keep[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    namespaces = job["kubernetes_sd_configs"][0]["namespaces"]["names"]
    assert namespaces == [_one("Namespace")["metadata"]["name"]]

    del job["kubernetes_sd_configs"]
    job["static_configs"] = [{"targets": [f"10.0.0.1:{SERVICE_PORT}"]}]
    config["rule_files"] = [str(DEPLOY / "prometheus" / r) for r in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = run_tool(promtool, "check", "config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- signing and the one writer

ROLLBACK_JOB = K8S / "rollback" / "rollback-job.yaml"


def _rollback_job() -> dict:
    return yaml.safe_load(ROLLBACK_JOB.read_text())


def _models_claim(spec: dict) -> str | None:
    for volume in spec["volumes"]:
        if "persistentVolumeClaim" in volume and volume["name"] == "models":
            return volume["persistentVolumeClaim"]["claimName"]
    return None


def _secrets(spec: dict) -> dict[str, dict]:
    return {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}


def test_only_the_trainer_and_the_rollback_job_write_the_model_volume() -> None:
    claim = _models_claim(_pod_spec("Deployment"))
    writers = []
    pods = [("CronJob", _pod_spec("CronJob")), ("Deployment", _pod_spec("Deployment"))]
    pods.append(("rollback Job", _rollback_job()["spec"]["template"]["spec"]))
    for kind, spec in pods:
        if _models_claim(spec) != claim:
            continue
        volume = next(v for v in spec["volumes"] if v["name"] == "models")
        for container in spec["containers"]:
            for mount in container["volumeMounts"]:
                if mount["name"] == "models" and not (
                    mount.get("readOnly") or volume["persistentVolumeClaim"].get("readOnly")
                ):
                    writers.append(kind)
    assert writers == ["CronJob", "rollback Job"]


def test_the_service_gets_the_public_key_and_the_trainer_the_private_one() -> None:
    service = _pod_spec("Deployment")
    (container,) = service["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS" not in env  # shipped: unsigned refused
    key_path = Path(env["ROCKETRANK_ARTIFACT_PUBLIC_KEY"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    secret = _secrets(service)["artifact-public-key"]
    assert mounts["artifact-public-key"]["mountPath"] == str(key_path.parent)
    assert mounts["artifact-public-key"]["readOnly"] is True
    assert [i["path"] for i in secret["items"]] == [key_path.name] == ["signing.pub"]
    assert settings_from_env(
        {"ROCKETRANK_REPO": "/models", "ROCKETRANK_FEATURES_DIR": "/data", **{
            k: v for k, v in env.items() if k == "ROCKETRANK_ARTIFACT_PUBLIC_KEY"
        }}
    ).artifact_public_key == key_path  # fmt: skip
    assert all(i["key"] != "signing.key" for s in _secrets(service).values() for i in s["items"])

    trainer = _pod_spec("CronJob")
    (job,) = trainer["containers"]
    env = {e["name"]: e.get("value") for e in job["env"]}
    key = Path(env["ROCKETRANK_SIGNING_KEY"])
    secret = _secrets(trainer)["signing-key"]
    assert secret["secretName"] != _secrets(service)["artifact-public-key"]["secretName"]
    assert secret["defaultMode"] == 0o400 and [i["path"] for i in secret["items"]] == [key.name]
    mount = next(m for m in job["volumeMounts"] if m["name"] == "signing-key")
    assert mount["mountPath"] == str(key.parent) and mount["readOnly"] is True
    from models.contract.signing import SIGNING_KEY_ENV

    assert SIGNING_KEY_ENV == "ROCKETRANK_SIGNING_KEY"  # the variable `rocketrank export` reads


def test_rollback_job_is_a_valid_all_or_nothing_writer_with_expected_versions() -> None:
    job = _rollback_job()
    assert k8s_errors(job) == []
    spec = job["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["image"] == _pod_spec("CronJob")["containers"][0]["image"]
    args = parse_cli_rollback(container["command"] + container["args"])
    assert args.name == ["coarse", "fine"]
    assert sorted(e.split("=")[0] for e in args.expect_current) == ["coarse", "fine"]
    assert _models_claim(spec) == _models_claim(_pod_spec("Deployment"))
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert not any("rollback" in r for r in kustomization["resources"])  # on demand only


def parse_cli_rollback(argv: list[str]):
    import argparse

    from training.commands import model_versions

    assert argv[:3] == ["rocketrank", "models", "rollback"]
    parser = argparse.ArgumentParser()
    model_versions.add_arguments_for("models rollback", parser)
    return parser.parse_args(argv[3:])


def test_rollback_job_placeholders_move_nothing(tmp_path) -> None:
    from models.contract.repository import ModelRepository
    from rocketrank.cli import main as cli
    from tests.helpers.export import tiny_writer

    repo = ModelRepository(tmp_path / "repo")
    for name in ("coarse", "fine"):
        for seed in range(2):
            repo.publish(name, tiny_writer(name, seed=seed))
    before = {n: repo.current_version(n) for n in ("coarse", "fine")}
    (container,) = _rollback_job()["spec"]["template"]["spec"]["containers"]
    args = [a if a != "/models" else str(repo.root) for a in container["args"]]
    assert cli(args) == 1  # EXPECTED-... is not a version name
    assert {n: repo.current_version(n) for n in ("coarse", "fine")} == before

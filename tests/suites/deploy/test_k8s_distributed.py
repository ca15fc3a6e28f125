"""deploy/k8s/distributed: the multi-pod torchrun Job is valid Kubernetes and wired up.

No cluster exists here: the manifest is checked against the vendored strict
Kubernetes schemas, torchrun's own argument parser, the train CLI's parser, and
the objects of deploy/k8s it refers to.
"""

from __future__ import annotations

import shlex

import pytest
import yaml
from torch.distributed.run import get_args_parser

from tests.helpers.deploy import K8S, k8s_errors, k8s_manifests, parse_cli

MANIFEST = K8S / "distributed" / "training-distributed.yaml"
DOCS = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _one(kind: str) -> dict:
    (found,) = [d for d in DOCS if d["kind"] == kind]
    return found


def _container() -> dict:
    (container,) = _one("Job")["spec"]["template"]["spec"]["containers"]
    return container


def _command(resume: bool) -> tuple[list[str], list[str]]:
    """(torchrun options, rocketrank argv) of the container's script, env substituted."""
    container = _container()
    env = {e["name"]: e.get("value", "uid-from-downward-api") for e in container["env"]}
    env["RESUME"] = "--resume" if resume else ""
    script = container["args"][0]
    line = script.split("exec ", 1)[1]
    words = shlex.split(line.replace("\\\n", " "))
    words = [w for w in (_subst(w, env) for w in words) if w]
    assert words[0] == "torchrun"
    module = words.index("-m")
    assert words[module + 1] == "rocketrank.cli"
    return words[1:module], words[module + 2 :]


def _subst(word: str, env: dict[str, str]) -> str:
    for name, value in sorted(env.items(), key=lambda kv: -len(kv[0])):
        word = word.replace(f"${name}", value)
    return word


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_every_object_matches_the_kubernetes_schema(doc: dict) -> None:
    assert k8s_errors(doc) == []


def test_pods_find_the_rendezvous_of_pod_zero() -> None:
    job, service = _one("Job"), _one("Service")
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    options, _ = _command(resume=False)
    args = get_args_parser().parse_args([*options, "-m", "rocketrank.cli"])
    host, port = args.rdzv_endpoint.rsplit(":", 1)
    # Indexed Job pod 0 is <job>-0; with the subdomain it resolves as <job>-0.<service>
    assert host == f"{name}-0.{service['metadata']['name']}"
    assert int(port) == service["spec"]["ports"][0]["port"]
    assert int(port) in [p["containerPort"] for p in _container()["ports"]]
    assert args.rdzv_backend == "c10d"
    assert int(args.nnodes) == job["spec"]["completions"] == job["spec"]["parallelism"]
    cpus = int(_container()["resources"]["requests"]["cpu"])
    assert int(args.nproc_per_node) <= cpus


@pytest.mark.parametrize("resume", [False, True])
def test_the_workers_run_a_valid_train_command(resume: bool) -> None:
    _, argv = _command(resume)
    args = parse_cli(argv)
    assert args.resume is resume
    assert args.nproc == 1  # torchrun launched the processes; no second launch inside
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    assert str(args.data) in mounts and mounts[str(args.data)]["readOnly"] is True
    assert any(str(args.out).startswith(path) for path in mounts)
    assert str(args.config).startswith("/app/configs/")  # where Dockerfile.trainer puts them


def test_same_image_namespace_and_user_as_the_training_cronjob() -> None:
    main = {d["kind"]: d for _, d in k8s_manifests()}
    cron = main["CronJob"]
    cron_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod = _one("Job")["spec"]["template"]["spec"]
    assert _container()["image"] == cron_pod["containers"][0]["image"]
    assert pod["securityContext"] == cron_pod["securityContext"]
    namespace = main["Namespace"]["metadata"]["name"]
    assert all(d["metadata"]["namespace"] == namespace for d in DOCS)
    claims = {
        d["metadata"]["name"] for _, d in k8s_manifests() if d["kind"] == "PersistentVolumeClaim"
    }
    claims |= {d["metadata"]["name"] for d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    for volume in pod["volumes"]:
        assert volume["persistentVolumeClaim"]["claimName"] in claims
    # rank 0 may land on any pod, so the run directory is shared by all of them
    runs = _one("PersistentVolumeClaim")
    assert runs["spec"]["accessModes"] == ["ReadWriteMany"]

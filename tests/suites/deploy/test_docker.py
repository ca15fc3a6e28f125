"""Dockerfiles and the trainer script: non-root users, health checks, CPU-only torch
at the project's pin, build contexts that hold what the images copy, and commands
the real ``rocketrank`` parser accepts."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.deploy import (
    DEPLOY,
    ROOT,
    SERVICE_PORT,
    SERVICE_UID,
    TRAIN_SCRIPT,
    dockerfile_instructions,
    exec_form,
    final_stage,
    iter_env,
    parse_cli,
    script_defaults,
    script_rocketrank_calls,
    service_setting_env_names,
)

DOCKER = DEPLOY / "docker"
DOCKERFILES = {
    "service": DOCKER / "Dockerfile.service",
    "trainer": DOCKER / "Dockerfile.trainer",
}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXTRAS = {"service": "serve", "trainer": "train"}


def _instructions(image: str):
    return dockerfile_instructions(DOCKERFILES[image])


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_runs_as_the_non_root_user_it_creates(image: str) -> None:
    final = final_stage(_instructions(image))
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid == str(SERVICE_UID) and gid in ("", str(SERVICE_UID))
    created = " ".join(i.args for i in final if i.keyword == "RUN")
    assert f"useradd --system --uid {SERVICE_UID}" in created
    # Nothing after USER switches back to root.
    last_user = max(n for n, i in enumerate(final) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in final[last_user:])


def test_service_image_health_check_probes_healthz_on_the_served_port() -> None:
    final = final_stage(_instructions("service"))
    (check,) = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert f"http://127.0.0.1:{SERVICE_PORT}/healthz" in check
    assert re.search(r"--timeout=\d+s", check) and re.search(r"--start-period=\d+s", check)
    command = exec_form(check.split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")  # the probe is valid Python
    (expose,) = [i.args for i in final if i.keyword == "EXPOSE"]
    (cmd,) = [i.args for i in final if i.keyword == "CMD"]
    (entrypoint,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert exec_form(entrypoint) == ["rocketrank"]
    serve = parse_cli(exec_form(cmd))
    assert int(expose) == serve.port == SERVICE_PORT


def test_trainer_image_states_that_a_batch_job_has_no_probe() -> None:
    """The trainer's health is its exit code (compose waits for completion,
    Kubernetes for the Job); the Dockerfile says so instead of inheriting a probe."""
    final = final_stage(_instructions("trainer"))
    assert [i.args for i in final if i.keyword == "HEALTHCHECK"] == ["NONE"]
    (entrypoint,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert exec_form(entrypoint) == ["train_and_export"]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_torch_is_the_cpu_build_at_the_project_pin(image: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.MULTILINE).group(1)
    index = re.search(r"^TORCH_CPU_INDEX := (\S+)$", makefile, re.MULTILINE).group(1)
    assert index == CPU_INDEX
    runs = [i.args for i in _instructions(image) if i.keyword == "RUN" and "torch" in i.args]
    assert runs == [
        f"pip install -c constraints.txt --extra-index-url {CPU_INDEX} torch=={version}+cpu"
    ]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_pip_install_is_pinned_by_constraints(image: str) -> None:
    """Images install the versions the tests ran with, not whatever is newest at build."""
    instructions = _instructions(image)
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert installs
    for command in installs:
        assert "-c constraints.txt" in command, command
    copied = [i.args.split()[:-1] for i in instructions if i.keyword == "COPY"]
    assert ["constraints.txt"] in copied
    first_copy = next(n for n, i in enumerate(instructions) if i.args.startswith("constraints"))
    first_install = next(n for n, i in enumerate(instructions) if "pip install" in i.args)
    assert first_copy < first_install


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_installs_only_its_extra(image: str) -> None:
    runs = [i.args for i in _instructions(image) if i.keyword == "RUN" and "install" in i.args]
    project = [r for r in runs if "torch" not in r]
    assert len(project) == 1
    assert f"pip install -c constraints.txt '.[{EXTRAS[image]}]'" in project[0]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_python_version_satisfies_the_project(image: str) -> None:
    args = [i.args for i in _instructions(image) if i.keyword == "ARG"]
    version = next(a.split("=", 1)[1] for a in args if a.startswith("PYTHON_VERSION="))
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def _dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_holds_every_copied_file(image: str) -> None:
    ignore = DOCKERFILES[image].with_name(DOCKERFILES[image].name + ".dockerignore")
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [i for i in _instructions(image) if i.keyword == "COPY"]
    assert copies
    for ins in copies:
        words = [w for w in ins.args.split() if not w.startswith("--")]
        if "--from=" in ins.args:
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert _dockerignore_allows(patterns, source), (
                f"COPY {source}: excluded by {ignore.name}"
            )
    assert not _dockerignore_allows(patterns, ".venv")
    assert not _dockerignore_allows(patterns, ".git")


def test_service_image_leaves_training_code_out() -> None:
    copied = {i.args.split()[0] for i in _instructions("service") if i.keyword == "COPY"}
    assert "training" not in copied
    assert {"models", "service", "rocketrank"} <= copied


def test_image_environment_is_made_of_real_settings() -> None:
    known = service_setting_env_names()
    for image in DOCKERFILES:
        for key, _ in iter_env(_instructions(image)):
            if key.startswith("ROCKETRANK_"):
                assert key in known, f"{image}: {key}"


def test_trainer_script_is_valid_shell_and_its_commands_parse() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    result = subprocess.run([sh, "-n", str(TRAIN_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = script_rocketrank_calls()
    commands = [" ".join(c[:2]) if c[0] in {"data", "models"} else c[0] for c in calls]
    assert commands == ["synth", "data check", "train", "export", "models list"]
    for argv in calls:
        parse_cli(argv)


def test_trainer_script_uses_configs_the_image_ships() -> None:
    defaults = script_defaults()
    train = next(c for c in script_rocketrank_calls() if c[0] == "train")
    config = Path(parse_cli(train).config)
    assert config.parent == Path(defaults["CONFIG_DIR"])
    copies = [i.args.split() for i in _instructions("trainer") if i.keyword == "COPY"]
    assert ["configs", defaults["CONFIG_DIR"]] in copies
    for stage in defaults["STAGES"].split():
        assert (ROOT / "configs" / f"{stage}_ctr.yaml").is_file(), stage
        yaml.safe_load((ROOT / "configs" / f"{stage}_ctr.yaml").read_text())

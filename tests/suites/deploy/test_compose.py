"""docker-compose.yml: valid against the Compose Specification schema (as
check-jsonschema ships it) and consistent with the files, settings and commands it
refers to."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers.deploy import (
    COMPOSE_FILE,
    ROOT,
    SERVICE_PORT,
    TRAIN_SCRIPT,
    compose_schema,
    dockerfile_instructions,
    exec_form,
    parse_cli,
    schema_errors,
    script_defaults,
    service_setting_env_names,
    settings_from_env,
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (i.partition("=") for i in env)}
    return env


def _mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of every short-syntax volume."""
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])]


def test_shipped_compose_schema_is_a_valid_json_schema() -> None:
    schema = compose_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["title"] == "Compose Specification"


def test_compose_file_matches_the_compose_specification(compose: dict) -> None:
    assert schema_errors(compose_schema(), compose) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["services"]["service"].update(helthcheck={}), "helthcheck"),
        (lambda c: c["services"]["redis"]["healthcheck"].update(interval=5), "interval"),
        (lambda c: c["services"]["service"]["depends_on"]["redis"].update(condition="up"), "up"),
    ],
)
def test_the_schema_check_catches_mistakes(compose: dict, mutate, message: str) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)
    errors = schema_errors(compose_schema(), broken)
    assert errors and any(message in e for e in errors), errors


def test_every_bind_mount_and_build_file_exists(services: dict) -> None:
    for name, service in services.items():
        for source, _ in _mounts(service):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: mounts missing {source}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_named_volumes_are_declared_and_used(compose: dict, services: dict) -> None:
    used = {
        source
        for service in services.values()
        for source, _ in _mounts(service)
        if not source.startswith((".", "/"))
    }
    assert used == set(compose["volumes"])


def test_service_environment_is_made_of_real_settings(services: dict) -> None:
    known = service_setting_env_names()
    for name, service in services.items():
        for key in _env(service):
            if key.startswith("ROCKETRANK_") and key != "ROCKETRANK_SIGNING_KEY":
                assert key in known, f"{name}: {key} is not a service setting"
    env = {k: v for k, v in _env(services["service"]).items() if v is not None}
    settings = settings_from_env(env)
    assert settings.redis_url == "redis://redis:6379/0"
    assert str(settings.repo) == "/models"


def test_trainer_environment_is_read_by_its_script(services: dict) -> None:
    defaults = script_defaults(TRAIN_SCRIPT)
    for key in _env(services["trainer"]):
        if key == "ROCKETRANK_SIGNING_KEY":
            continue  # read by `rocketrank export` (test_signing_keys_go_to_their_one_reader)
        assert key in defaults, f"trainer sets {key}, which train_and_export.sh never reads"
    targets = {target for _, target in _mounts(services["trainer"])}
    assert {defaults["DATA_DIR"], defaults["RUNS_DIR"], defaults["MODEL_REPO"]} <= targets


def test_start_order_waits_for_redis_and_a_trained_model(services: dict) -> None:
    assert "healthcheck" in services["redis"]
    depends = services["service"]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["trainer"]["condition"] == "service_completed_successfully"
    assert depends["features"]["condition"] == "service_completed_successfully"
    assert services["features"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for job in ("trainer", "features"):
        assert services[job]["restart"] == "no", job


def test_service_and_feature_job_share_the_model_volume_and_redis(services: dict) -> None:
    trainer_models = dict((t, s) for s, t in _mounts(services["trainer"]))["/models"]
    service_mounts = {t: s for s, t in _mounts(services["service"])}
    assert service_mounts["/models"] == trainer_models
    assert services["service"]["volumes"][0].endswith(":ro")
    features = parse_cli(services["features"]["command"])
    service_env = _env(services["service"])
    assert features.redis == service_env["ROCKETRANK_REDIS_URL"]
    # No prefix on either side: the loader's default must be the service's default.
    from service.settings import Settings

    assert "ROCKETRANK_REDIS_PREFIX" not in service_env
    assert features.prefix == Settings.model_fields["redis_prefix"].default
    data_mount = {t: s for s, t in _mounts(services["features"])}
    assert data_mount[str(features.data)] == "data"


def test_ports_agree_across_compose_image_and_prometheus(services: dict) -> None:
    serve = parse_cli(services["service"]["command"])
    assert serve.port == SERVICE_PORT and serve.host == "0.0.0.0"
    assert services["service"]["ports"] == [f"{SERVICE_PORT}:{SERVICE_PORT}"]
    dockerfile = ROOT / services["service"]["build"]["dockerfile"]
    exposed = [i.args for i in dockerfile_instructions(dockerfile) if i.keyword == "EXPOSE"]
    assert exposed == [str(SERVICE_PORT)]
    cmd = [i for i in dockerfile_instructions(dockerfile) if i.keyword == "CMD"][-1]
    assert exec_form(cmd.args) == services["service"]["command"]

    prometheus_dir = _bind_source(services["prometheus"], "/etc/prometheus")
    config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "rocketrank")
    assert job["static_configs"][0]["targets"] == [f"service:{SERVICE_PORT}"]
    assert services["prometheus"]["ports"] == ["9090:9090"]
    assert services["grafana"]["ports"] == ["3000:3000"]


def _bind_source(service: dict, target: str) -> Path:
    return ROOT / next(s for s, t in _mounts(service) if t == target)


def test_prometheus_loads_the_shipped_config_and_rules(services: dict) -> None:
    prometheus = services["prometheus"]
    flags = dict(arg.lstrip("-").split("=", 1) for arg in prometheus["command"])
    config_file = Path(flags["config.file"])
    assert config_file.parent == Path("/etc/prometheus")
    host_dir = _bind_source(prometheus, "/etc/prometheus")
    config = yaml.safe_load((host_dir / config_file.name).read_text())
    for rule_file in config["rule_files"]:
        assert (host_dir / rule_file).is_file(), rule_file
    assert flags["storage.tsdb.path"] == "/prometheus"
    assert dict((t, s) for s, t in _mounts(prometheus))["/prometheus"] == "prometheus-data"


def test_grafana_is_provisioned_with_anonymous_viewers(services: dict) -> None:
    grafana = services["grafana"]
    env = _env(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    provisioning = _bind_source(grafana, "/etc/grafana/provisioning")
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    assert re.fullmatch(r"http://prometheus:9090/?", url), url
    provider = yaml.safe_load((provisioning / "dashboards/rocketrank.yml").read_text())
    dashboards_target = provider["providers"][0]["options"]["path"]
    dashboards = _bind_source(grafana, dashboards_target)
    assert (dashboards / "rocketrank.json").is_file()
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(dashboards_target)).is_file()


def test_signing_keys_go_to_their_one_reader(services: dict) -> None:
    keygen = parse_cli(services["keygen"]["entrypoint"][1:] + services["keygen"]["command"])
    mounts = {name: dict((t, s) for s, t in _mounts(services[name])) for name in services}
    private_volume = mounts["keygen"][str(keygen.out)]
    public_volume = mounts["keygen"][str(keygen.public_out)]
    trainer_key = Path(_env(services["trainer"])["ROCKETRANK_SIGNING_KEY"])
    assert mounts["trainer"][str(trainer_key.parent)] == private_volume
    service_key = Path(_env(services["service"])["ROCKETRANK_ARTIFACT_PUBLIC_KEY"])
    assert mounts["service"][str(service_key.parent)] == public_volume
    holders = [n for n, m in mounts.items() if private_volume in m.values()]
    assert sorted(holders) == ["keygen", "trainer"]  # never the service
    assert "ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS" not in _env(services["service"])
    depends = services["trainer"]["depends_on"]["keygen"]["condition"]
    assert depends == "service_completed_successfully"

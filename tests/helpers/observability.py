"""Helpers for the observability and deployment tests: Prometheus' binaries and a
throwaway Prometheus server.

Debian's ``prometheus`` package provides ``prometheus`` and ``promtool`` (``.ci/run``
installs it). Without them a test skips, except under ``CI=true``, where a missing
binary is a failure: CI must never pass by skipping the real checks.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.net import free_port
from tests.helpers.repo import IN_CI, ROOT

DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "rocketrank.json"


def _load_renderer():
    """``deploy/render_dashboard.py`` as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "render_dashboard", DEPLOY / "render_dashboard.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_dashboard"] = module
    spec.loader.exec_module(module)
    return module


render_dashboard = _load_renderer()


def require_tool(name: str) -> str:
    """Path of ``name`` on PATH; skip the test without it (fail under CI)."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found (apt-get install prometheus)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_tool(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text (never raises on exit code)."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def http_get_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class PrometheusServer:
    """A private Prometheus (own config, data dir and port) scraping ``targets``.

    The shipped ``deploy/prometheus/prometheus.yml`` is the base: the ``rocketrank``
    job is pointed at ``target``, intervals shortened, and ``alerts.yml`` loaded
    from the repository, so the test exercises the shipped job name, labels and rules.
    """

    def __init__(self, binary: str, target: str, interval: str = "1s") -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rocketrank-prom-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self._config(target, interval)))
        self.log_path = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _config(target: str, interval: str) -> dict:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval=interval, evaluation_interval=interval)
        config["global"]["scrape_timeout"] = interval
        config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        job = jobs["rocketrank"]
        job["scrape_interval"] = interval
        job["scrape_timeout"] = interval
        job["static_configs"][0]["targets"] = [target]
        config["scrape_configs"] = [job]
        return config

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout_s}s on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

"""Draw the README's dashboard picture from a real service under valid, steady traffic.

Starts ``rocketrank serve`` on an exported model repository, a private Prometheus
(the shipped ``deploy/prometheus/`` config and alert rules, the ``rocketrank`` job
pointed at the service, scraping every second), sends valid ``/v1/rank`` requests
at a fixed rate — bodies from ``rocketrank sample-request``, so every user and item
is known to the feature store — then renders the dashboard's panels with
``render_dashboard.py`` and stops both processes.

Usage (after the README's quick tour, from the repository root)::

    python deploy/dashboard_picture.py --repo model_repo --data data \\
        --public-key keys/signing.pub --minutes 4 --rps 10 --out docs/img/dashboard.png

Prometheus comes from Debian's ``prometheus`` package; needs ``pyyaml``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from render_dashboard import PrometheusClient, render

HERE = Path(__file__).resolve().parent
# (stage, candidates, extra sample-request flags): the cascade narrows 2000 -> 200 -> 20
MIX = (
    ("coarse", 2000, []),
    ("fine", 200, []),
    ("cascade", 2000, ["--coarse-top-k", "200", "--top-k", "20"]),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout_s:.0f} s (log: {log})")


def _bodies(data: Path, per_stage: int) -> list[bytes]:
    """Request bodies of every stage of :data:`MIX`, interleaved, from real log rows."""
    by_stage = []
    for stage, candidates, extra in MIX:
        bodies = []
        for seed in range(per_stage):
            cmd = [sys.executable, "-m", "rocketrank", "sample-request", "--data", str(data)]
            cmd += ["--stage", stage, "--candidates", str(candidates), "--seed", str(seed), *extra]
            bodies.append(subprocess.run(cmd, check=True, capture_output=True).stdout)
        by_stage.append(bodies)
    return [b for group in zip(*by_stage) for b in group]


def _prometheus_config(target: str, folder: Path) -> Path:
    config = yaml.safe_load((HERE / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config["rule_files"] = [str(HERE / "prometheus" / "alerts.yml")]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rocketrank"]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"][0]["targets"] = [target]
    config["scrape_configs"] = [job]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _send(url: str, bodies: list[bytes], seconds: float, rps: float) -> dict[int, int]:
    """POST ``bodies`` round robin at ``rps`` for ``seconds``; status code -> count."""
    codes: dict[int, int] = {}
    start = time.monotonic()
    for n, body in enumerate(itertools.cycle(bodies)):
        due = start + n / rps
        if due - start >= seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        request = urllib.request.Request(
            url, data=body, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        codes[code] = codes.get(code, 0) + 1
    return codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="exported model repository")
    parser.add_argument("--data", type=Path, required=True, help="data dir (features, requests)")
    parser.add_argument("--public-key", type=Path, required=True, help="artifact public key")
    parser.add_argument("--minutes", type=float, default=4.0, help="traffic duration")
    parser.add_argument("--rps", type=float, default=10.0, help="requests per second")
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="rocketrank-picture-"))
    port, prom_port = _free_port(), _free_port()
    env = {**os.environ, "ROCKETRANK_ARTIFACT_PUBLIC_KEY": str(args.public_key)}
    serve_cmd = [sys.executable, "-m", "rocketrank", "serve", "--repo", str(args.repo)]
    serve_cmd += ["--features", str(args.data), "--port", str(port)]
    prom_cmd = [
        args.prometheus,
        f"--config.file={_prometheus_config(f'127.0.0.1:{port}', folder)}",
        f"--storage.tsdb.path={folder / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--log.level=warn",
    ]
    serve_log, prom_log = folder / "serve.log", folder / "prometheus.log"
    with serve_log.open("wb") as s_out, prom_log.open("wb") as p_out:
        serve = subprocess.Popen(serve_cmd, env=env, stdout=s_out, stderr=subprocess.STDOUT)
        prom = subprocess.Popen(prom_cmd, stdout=p_out, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", 300, serve, serve_log)
        _wait(f"http://127.0.0.1:{prom_port}/-/ready", 60, prom, prom_log)
        bodies = _bodies(args.data, per_stage=8)
        url = f"http://127.0.0.1:{port}/v1/rank"
        _send(url, bodies, 10.0, args.rps)  # warm-up, before the drawn window
        start = time.time()
        codes = _send(url, bodies, args.minutes * 60, args.rps)
        time.sleep(3.0)  # the last scrape
        end = time.time()
        drawn = render(PrometheusClient(f"http://127.0.0.1:{prom_port}"), args.out, start, end)
    finally:
        for proc in (serve, prom):
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps({"out": str(args.out), "status_codes": codes, "series": drawn}))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

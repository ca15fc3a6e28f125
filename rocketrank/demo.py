"""``make demo``: the main job end to end on the embedded default.

synthetic log → data check → ablation (every variant, over two seeds, with the
paired gain over light_alone and its 95% interval) for the coarse and the fine
stage → export both light nets into a local model repository → start the
service on the embedded feature store → one cascade request for a sample user
→ print the ranked items → stop the service.

Every step runs the real ``rocketrank`` command in a subprocess, exactly as a
user would type it, so the demo exercises what the README documents.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", "rocketrank", *args]
    print("$ rocketrank " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(
    method: str, url: str, body: dict | None = None, timeout: float = 5.0
) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _sample_request(data_dir: Path) -> dict:
    import pandas as pd

    test = pd.read_parquet(data_dir / "test.parquet", columns=["request_id", "user_id"])
    items = pd.read_parquet(data_dir / "items.parquet", columns=["item_id"])
    user_id = int(test["user_id"].iloc[0])
    n = min(2000, len(items))
    candidates = items["item_id"].sample(n=n, random_state=0).astype("int64").tolist()
    return {
        "user_id": user_id,
        "context": {"hour": 20, "device": "ios"},
        "candidates": candidates,
        "stage": "cascade",
        "coarse_top_k": 200,
        "top_k": 10,
        "request_id": "demo-1",
    }


def _serve_and_query(repo: Path, data_dir: Path, public_key: Path) -> None:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "rocketrank", "serve", "--repo", str(repo),
        "--features", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    print("$ rocketrank " + " ".join(cmd[3:]), flush=True)
    # the demo's throwaway key verifies what the demo exported (unsigned stays refused)
    env = {**os.environ, "ROCKETRANK_ARTIFACT_PUBLIC_KEY": str(public_key)}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"service exited with code {proc.returncode}")
            try:
                status, _ = _http("GET", base + "/readyz", timeout=1)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit("service did not become ready within 120 s")
            time.sleep(0.3)
        body = _sample_request(data_dir)
        _http("POST", base + "/v1/rank", body)  # warm the connection path
        t0 = time.perf_counter()
        status, answer = _http("POST", base + "/v1/rank", body)
        round_trip = (time.perf_counter() - t0) * 1e3
        if status != 200:
            raise SystemExit(f"/v1/rank answered {status}: {answer}")
        print(
            f"\ncascade for user {body['user_id']}: {len(body['candidates'])} candidates → "
            f"{body['coarse_top_k']} (coarse) → {body['top_k']} (fine); "
            f"models {answer.get('model_versions')}"
        )
        print(f"{'rank':>4}  {'item_id':>14}  {'score':>8}  {'coarse':>8}")
        for rank, item in enumerate(answer["items"], 1):
            coarse = item.get("coarse_score")
            coarse_s = f"{coarse:8.3f}" if coarse is not None else " " * 8
            print(f"{rank:>4}  {item['item_id']:>14}  {item['score']:8.4f}  {coarse_s}")
        timing = ", ".join(f"{k} {v:.2f}" for k, v in answer.get("timing_ms", {}).items())
        print(f"server timing (ms): {timing}")
        print(f"HTTP round trip: {round_trip:.1f} ms; degraded={answer.get('degraded')}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _variant(config: str) -> str:
    """The distillation variant a run config ships with (what gets exported)."""
    import yaml

    return str(yaml.safe_load(Path(config).read_text())["distill"]["variant"])


def _print_gains(report_path: Path, stage: str) -> None:
    """The paired Δ AUC of every distilled variant, saying plainly when it may be noise."""
    from training.ablate.stats import describe_gain

    report = json.loads(report_path.read_text())
    seeds = len(report["seeds"])
    rows = [r for r in report["rows"] if r.get("delta_vs_light_alone")]
    print(
        f"\n{stage} stage: light-net test AUC gain over light_alone (paired on the same test rows, "
        f"mean of {seeds} seeds, 95% interval over test requests and seeds)"
    )
    noise = []
    for row in rows:
        d = row["delta_vs_light_alone"]
        print(f"  {row['variant']:<26} {describe_gain(d['mean'], d['low'], d['high'])}")
        if d["low"] <= 0.0 <= d["high"]:
            noise.append(row["variant"])
    if noise:
        print(
            f"  The interval includes 0 for {', '.join(noise)}: at this demo's scale "
            f"({seeds} seeds) those differences cannot be told from noise. A claim needs more "
            "rows and seeds (rocketrank ablate --seeds 5 on 1M rows)."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="demo", help="working directory (recreated)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' epochs")
    parser.add_argument(
        "--seeds", type=int, default=2, help="ablation seeds per variant (default 2)"
    )
    args = parser.parse_args(argv)

    work = Path(args.dir)
    if work.exists():
        shutil.rmtree(work)
    data, runs, repo = work / "data", work / "runs", work / "model_repo"
    keys = work / "keys"  # outside the model repository, like a deployment's Secret

    _step(f"synthetic impression log ({args.rows:,} rows)")
    _run("synth", "--out", str(data), "--rows", str(args.rows), "--seed", str(args.seed))
    _step("validate the log against its schema")
    _run("data", "check", "--data", str(data))
    _step("a throwaway key pair that signs the exported artifacts")
    _run("models", "keygen", "--out", str(keys))

    for stage, config in (("coarse", "configs/coarse_ctr.yaml"), ("fine", "configs/fine_ctr.yaml")):
        _step(
            f"{stage} stage: ablation of every distillation variant, {args.seeds} seeds ({config})"
        )
        epochs = [] if args.epochs is None else ["--epochs", str(args.epochs)]
        ablation = runs / f"{stage}_ablation"
        _run(
            "ablate", "--config", config, "--data", str(data), "--out", str(ablation),
            "--seeds", str(args.seeds), *epochs,
        )  # fmt: skip
        _print_gains(ablation / "report.json", stage)
        _step(f"{stage} stage: export the light net of the configured variant (seed 0)")
        _run(
            "export", "--run", str(ablation / _variant(config) / "seed0"),
            "--repo", str(repo), "--name", stage,
            "--items", str(data / "items.parquet"), "--signing-key", str(keys / "signing.key"),
        )  # fmt: skip
    _run("models", "list", "--repo", str(repo))

    _step("serve on the embedded feature store and rank for a sample user")
    _serve_and_query(repo, data, keys / "signing.pub")
    print("\ndemo finished: artifacts in", work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

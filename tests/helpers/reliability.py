"""Helpers of the fault suite: a served world over real HTTP, client threads
that keep the service under load and record every answer, /metrics parsing,
and the figures the suite measures (recovery time, p99 under fault).

The worlds, artifacts and ``rocketrank serve`` processes come from
``tests.helpers.service``; this module only adds what the fault tests need on top.
Figures are printed and, when ``RELIABILITY_FIGURES`` names a file,
appended to it as JSON lines (that is how docs/RELIABILITY.md was filled).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import service as sf
from tests.helpers.net import free_port

FIGURES_ENV = "RELIABILITY_FIGURES"


def record_figure(test: str, **figures: Any) -> None:
    """Print a measured figure and append it to ``$RELIABILITY_FIGURES``."""
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"[reliability] {line}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- the server


class LoggedService(sf.ServiceProcess):
    """``rocketrank serve`` whose output goes to a file, not a pipe.

    A pipe nobody reads fills up after 64 KB of log lines and then blocks the
    server's logging call, which a long fault test with many reloads would hit.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="rocketrank-fault-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "rocketrank", "serve", *args]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")}
        full_env.update({**sf.signing.service_env(), **(env or {})})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=sf.ROOT, env=full_env, start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        super().stop()
        text = self.log()
        self.log_path.unlink(missing_ok=True)
        return text


@contextlib.contextmanager
def running(args: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[LoggedService]:
    """A ready service, stopped (SIGTERM, then SIGKILL) on exit."""
    proc = LoggedService(args, env)
    try:
        proc.wait_ready(timeout=120)
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Answer:
    """One request made by a load client (times from ``time.monotonic``)."""

    sent: float
    done: float
    status: int  # 0: no HTTP answer (connection refused/reset)
    body: Any
    error: str | None = None

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1e3


class Load:
    """Client threads that POST rank bodies back to back on keep-alive connections.

    Args:
        base: ``http://127.0.0.1:PORT``.
        body: the JSON body, or a function of the request number that returns one.
        clients: concurrent connections.
        path: the endpoint.
    """

    def __init__(
        self,
        base: str,
        body: Mapping[str, Any] | Callable[[int], Mapping[str, Any]],
        clients: int = 3,
        path: str = "/v1/rank",
    ) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.body = body
        self.path = path
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self.answers

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.sent >= t]

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        """Block until ``n`` more answers arrived."""
        target = len(self.answers) + n
        deadline = time.monotonic() + timeout
        while len(self.answers) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made no progress: {len(self.answers)} answers")
            time.sleep(0.01)

    def _next_body(self) -> bytes:
        with self._lock:
            i = self._counter
            self._counter += 1
        body = self.body(i) if callable(self.body) else self.body
        return json.dumps(body).encode()

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            payload = self._next_body()
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request(
                    "POST", self.path, payload, headers={"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                try:
                    parsed: Any = json.loads(raw)
                except ValueError:
                    parsed = raw.decode(errors="replace")
                answer = Answer(sent, time.monotonic(), status, parsed)
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                answer = Answer(sent, time.monotonic(), 0, None, error=repr(exc))
                time.sleep(0.01)
            with self._lock:
                self.answers.append(answer)
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------- metrics


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``/metrics``: ``(name, frozenset(labels.items())) -> value``."""
    status, text = sf.http("GET", base + "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    found = [v for (n, lab), v in scrape(base).items() if n == name and wanted <= lab]
    assert found, f"{name}{labels} is not exposed"
    return sum(found)


# --------------------------------------------------------------------------- broken artifacts

BROKEN_KINDS = ("flipped_byte", "missing_file", "wrong_spec_hash", "other_feature_set")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _other_feature_set_writer(world: Mapping[str, Any]) -> Callable[[Path, str], None]:
    """A self-consistent fine artifact (checksums, spec hash, model) whose item
    features are not the store's: ``tags`` is gone and a ``brand`` column the
    item table has never had is needed."""
    import numpy as np
    import torch
    from torch import nn

    from models.contract.feature_spec import FeatureSpec
    from models.contract.features import FeatureEncoder
    from models.contract.manifest import (
        ENCODER_FILE,
        MODEL_FILE,
        Manifest,
        checksum_files,
        write_manifest,
    )

    item_names = ["item_id", "category", "price", "brand"]
    specs = [s for s in sf.SPECS if s.name != "tags"]
    specs.append(FeatureSpec("brand", "categorical", "item", dim=4))
    users, items = world["users"], world["items"]
    columns: dict[str, Any] = {n: users[n].to_numpy() for n in sf.USER_FEATURES}
    columns.update({n: items[n].to_numpy() for n in item_names[:3]})
    columns["hour"] = np.arange(24, dtype=float)
    columns["device"] = np.array(["ios", "android", "web"] * 8)
    columns["brand"] = np.array(["acme", "globex", "initech"] * 10)
    encoder = FeatureEncoder(specs).fit(columns)
    names = sf.USER_FEATURES + sf.CONTEXT_FEATURES + item_names

    class OtherMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = sf.Tower(encoder, names, 8)
            self.head = nn.Linear(8, 1)

        def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.head(torch.relu(self.body(features))).squeeze(-1)

    torch.manual_seed(0)
    module = torch.jit.script(OtherMLP().eval())

    def write(directory: Path, version: str) -> None:
        encoder.save(str(directory / ENCODER_FILE))
        torch.jit.save(module, str(directory / MODEL_FILE))
        manifest = Manifest(
            name="fine", version=version, created_at="2026-11-22T00:00:00+00:00",
            task="ctr", stage="fine", kind="mlp", format="torchscript", quantization="none",
            features={"user": sf.USER_FEATURES, "context": sf.CONTEXT_FEATURES, "item": item_names},
            feature_types={s.name: str(s.type) for s in specs}, spec_hash=encoder.spec_hash(),
            metrics={"auc": 0.5}, params=sum(p.numel() for p in module.parameters()),
            files=checksum_files(directory), git_commit=None, rocketrank_version="test",
        )  # fmt: skip
        write_manifest(directory, manifest)
        sf.signing.sign(directory)

    return write


def publish_broken(world: Mapping[str, Any], kind: str) -> str:
    """Publish and promote a broken ``fine`` version; returns its version name.

    Kinds: ``flipped_byte`` (one byte of ``model.pt`` inverted after the
    manifest was written), ``missing_file`` (``encoder.json`` deleted),
    ``wrong_spec_hash`` (the manifest's spec hash edited), ``other_feature_set``
    (a consistent artifact built for item features the store does not have).
    The damage is done after a verified publish, as on-disk corruption would be.
    """
    from models.contract.manifest import ENCODER_FILE, MANIFEST_FILE, MODEL_FILE
    from models.contract.repository import ModelRepository

    repo = ModelRepository(world["repo"])
    if kind == "other_feature_set":
        return repo.publish("fine", _other_feature_set_writer(world))
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken kind {kind!r}; choose from {BROKEN_KINDS}")
    # A good artifact built in a scratch repository, copied in unpromoted, damaged,
    # and only then promoted (the watcher must never see it intact).
    with tempfile.TemporaryDirectory() as scratch:
        good = sf.publish(Path(scratch), "fine", "mlp", world["encoder"], world["items"], seed=77)
        source = ModelRepository(scratch).version_dir("fine", good)

        def copy(directory: Path, version: str) -> None:
            for file in source.iterdir():
                shutil.copy2(file, directory / file.name)
            manifest = json.loads((directory / MANIFEST_FILE).read_text())
            manifest["version"] = version
            (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
            sf.signing.sign(directory)

        version = repo.publish("fine", copy, promote=False)
    directory = repo.version_dir("fine", version)
    if kind == "flipped_byte":
        _flip_byte(directory / MODEL_FILE)
    elif kind == "missing_file":
        (directory / ENCODER_FILE).unlink()
    else:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        manifest["spec_hash"] = "0" * 64
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
        sf.signing.sign(directory)  # a signed but inconsistent manifest (an exporter bug)
    repo.promote("fine", version, verify=False)
    return version

"""Overload: 3x the sustainable rate for 30 s against ``rocketrank serve`` under uvicorn.

The sustainable rate R is measured first, on this machine, in this run: four closed-loop
clients keep the worker's one rank thread busy and R is the rate of their answers. Then,
for 30 s, an open-loop client offers 2.5 R of cascade requests (and waits for every
answer) while another offers 0.5 R of fine-stage requests whose clients close the
connection right after sending them (abandoned). Checked:

* every patient request is answered 200 or 503 (no other status, no failed connection),
  the 503s carry ``Retry-After`` and cost the server less than a scored request;
* no abandoned request is scored: the fine stage (only the abandoning clients use it)
  scores nothing, and every request is accounted for by the server's counters (answered,
  or dropped as ``shed_requests_total{reason="disconnected"}``);
* the worker's RSS is back near its level before the overload.

Counts and the server's own figures only; the one time comparison is relative (a refusal
costs less than scoring).
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from bench.serve.loadgen import OpenLoopGenerator, build_request, run_async
from tests.helpers import reliability as rf
from tests.helpers import service as sf
from tests.helpers.memory import rss_bytes

pytestmark = pytest.mark.slow

USER = int(sf.USER_IDS[9])
IDS = [int(i) for i in sf.ITEM_IDS] * 5  # > 16 KiB: through the rank thread and admission
PATIENT = {"user_id": USER, "candidates": IDS, "stage": "cascade", "coarse_top_k": 200}
ABANDONED = {"user_id": USER, "candidates": IDS, "stage": "fine"}
OVERLOAD_S = 30.0
RSS_BOUND = 50 * 2**20


def sustainable_rate(base: str) -> float:
    """Answers per second of four closed-loop clients (the one rank thread never idles)."""
    with rf.Load(base, PATIENT, clients=4) as load:
        load.wait_for(10)  # warm-up
        t0 = time.monotonic()
        time.sleep(2.0)
        answers = load.since(t0)
    ok = [a for a in answers if a.status == 200]
    assert len(ok) == len(answers) > 0, {a.status for a in answers}
    return len(ok) / (max(a.done for a in ok) - t0)


# Its own process, so nothing of this test's threads delays the close after the send;
# corked, so the server receives the request and the FIN together: the client has left
# before the server can have started any work on its request.
ABANDONER = """
import socket, sys, time
port, rate, duration = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
payload = sys.stdin.buffer.read()
sent, start = 0, time.monotonic()
due = start
while due < start + duration:
    due += 1 / rate
    time.sleep(max(0.0, due - time.monotonic()))
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # held until the close...
    s.sendall(payload)
    s.close()  # ...which sends the request and the FIN together
    sent += 1
print(sent)
"""


def abandon(port: int, rate: float) -> subprocess.Popen:
    """Open a connection, send one whole request, close at once; at ``rate`` per second."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ABANDONER, str(port), str(rate), str(OVERLOAD_S)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(build_request("127.0.0.1", port, "/v1/rank", json.dumps(ABANDONED).encode()))
    proc.stdin.close()
    return proc


def probe(port: int, stop: threading.Event, seen: list[tuple[int, Any, float]]) -> None:
    """Patient requests one at a time, recording the refusals' headers."""
    body = json.dumps(PATIENT).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        conn.request("POST", "/v1/rank", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        total = float(resp.getheader("server-timing", "total;dur=nan").split("dur=")[1])
        kind = payload["detail"][0]["type"] if resp.status == 503 else None
        seen.append((resp.status, (kind, resp.getheader("retry-after")), total))
        time.sleep(0.05)
    conn.close()


def counters(base: str) -> dict[tuple[str, frozenset], float]:
    return {
        key: value
        for key, value in rf.scrape(base).items()
        if key[0] in ("rocketrank_requests_total", "rocketrank_shed_requests_total")
    }


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and wanted <= k[1])


def test_three_times_the_sustainable_rate_gets_fast_503s_and_scores_no_abandoned_request(
    tmp_path,
):
    world = sf.make_repo(tmp_path)
    args = ["--repo", str(world["repo"]), "--features", str(world["data"])]
    env = {"ROCKETRANK_RANK_THREADS": "1", "ROCKETRANK_MAX_INFLIGHT": "8"}
    with rf.running(args, env) as server:
        rate = sustainable_rate(server.base)
        before_rss = rss_bytes(server.proc.pid)
        before = counters(server.base)
        stop = threading.Event()
        probes: list[tuple[int, Any, float]] = []
        prober = threading.Thread(target=probe, args=(server.port, stop, probes))
        prober.start()
        abandoner = abandon(server.port, rate / 2)
        payload = build_request("127.0.0.1", server.port, "/v1/rank", json.dumps(PATIENT).encode())
        generator = OpenLoopGenerator(
            "127.0.0.1", server.port, [payload], max_connections=64, initial_connections=8,
            timeout_s=30.0,
        )  # fmt: skip
        try:
            result = run_async(generator.run(2.5 * rate, OVERLOAD_S))
        finally:
            stop.set()
            prober.join(timeout=30)
            assert abandoner.stdout is not None
            out = abandoner.stdout.read()
            abandoner.wait(timeout=30)
        abandoned = int(out)
        time.sleep(1.0)  # the last abandoned connections reach the server
        after = counters(server.base)
        after_rss = rss_bytes(server.proc.pid)
    patient = {code: result.status.count(code) for code in set(result.status)}
    answered = delta(after, before, "rocketrank_requests_total")
    dropped = delta(after, before, "rocketrank_shed_requests_total", reason="disconnected")
    scored_abandoned = delta(after, before, "rocketrank_requests_total", stage="fine")
    refusals = [(meta, ms) for status, meta, ms in probes if status == 503]
    scored_ms = [ms for i, ms in enumerate(result.server_ms) if result.status[i] == 200]
    rf.record_figure(
        "overload_3x",
        sustainable_rate=round(rate, 1),
        patient_statuses=patient,
        patient_errors=result.summary()["error_kinds"],
        abandoned_sent=abandoned,
        abandoned_scored=scored_abandoned,
        dropped_disconnected=dropped,
        shed_overload=delta(after, before, "rocketrank_shed_requests_total", reason="overload"),
        probes={s: [p[0] for p in probes].count(s) for s in {p[0] for p in probes}},
        refusal_server_ms_p50=statistics.median(ms for _, ms in refusals) if refusals else None,
        scored_server_ms_p50=statistics.median(scored_ms) if scored_ms else None,
        rss_before_mib=round(before_rss / 2**20, 1),
        rss_after_mib=round(after_rss / 2**20, 1),
    )
    # every patient request answered, 200 or a 503 refusal: no other 5xx, no failed request
    assert set(patient) <= {200, 503} and patient.get(200) and patient.get(503), patient
    assert {s for s, _, _ in probes} <= {200, 503}
    server_codes = {
        dict(k[1])["code"]
        for k, v in after.items()
        if k[0] == "rocketrank_requests_total" and v > 0
    }
    assert server_codes <= {"200", "503"}, server_codes
    # refusals: Retry-After, before any work (cheaper than a scored request)
    assert refusals and all(meta == ("overloaded", "1") for meta, _ in refusals), refusals[:5]
    assert statistics.median(ms for _, ms in refusals) < statistics.median(scored_ms)
    # no abandoned request scored; every request is answered or counted as dropped
    assert abandoned > 0 and dropped > 0
    assert scored_abandoned == 0, f"{scored_abandoned} abandoned requests were scored"
    assert answered + dropped == len(result.status) + abandoned + len(probes), (
        answered, dropped, len(result.status), abandoned, len(probes)
    )  # fmt: skip
    assert after_rss - before_rss < RSS_BOUND, (
        f"RSS grew by {(after_rss - before_rss) / 2**20:.1f} MiB"
    )

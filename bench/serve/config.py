"""Options of one ``rocketrank bench serve`` invocation and the benchmark's error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.serve.findmax import SLO_P99_MS

MIN_CATALOGUE_ITEMS = 100_000
"""Smallest item table the benchmark accepts by default: candidates must be drawn from a
realistic catalogue, not be the whole table (``--min-catalogue`` lowers it for tests)."""

NAIVE_RATE = 1.0
"""Offered rate of the naive baseline's fixed runs: it spends ~0.1-0.3 s of CPU on one
10,000-candidate request, so at the service's 100 req/s every request would time out
and its latency would not be a number."""

SUSTAINED_P99_MS = 1000.0
"""*Sustained* throughput: the highest rate served with zero errors, ≥ 95 % of the
offered rate achieved and p99 under this bound -- the server keeps up, however
slowly. Compared when a server meets the SLO at no rate (the naive baseline; or
any server on a machine too noisy for a 10 ms p99)."""


@dataclass
class ServeBenchConfig:
    """Options of one ``rocketrank bench serve`` invocation (see :mod:`bench.serve.command`)."""

    repo: Path
    features: Path
    out: Path
    redis: str | None = None
    stage: str = "coarse"
    candidates: int | None = None
    top_k: int | None = None
    coarse_top_k: int | None = None
    rate: float = 100.0
    duration: float = 10.0
    runs: int = 3
    warmup: float = 2.0
    find_max: bool = False
    start_rate: float = 100.0
    max_rate: float = 4000.0
    probe_duration: float | None = None
    max_probes: int = 10
    workers: int = 1
    torch_threads: int = 0
    requests: int = 32
    seed: int = 0
    coarse_model: str = "coarse"
    fine_model: str = "fine"
    naive: bool = True
    naive_start_rate: float = 8.0
    naive_rate: float = NAIVE_RATE
    bodies: tuple[str, ...] = ("json",)
    min_catalogue: int = MIN_CATALOGUE_ITEMS
    chart: Path | None = None
    generator_check_rate: float | None = None
    slo_ms: float | None = None
    timeout: float = 2.0
    max_connections: int = 256
    bare_repeats: int = 20

    @property
    def slo(self) -> float:
        return self.slo_ms if self.slo_ms is not None else SLO_P99_MS[self.stage]

    @property
    def threads(self) -> int:
        """Torch intra-op threads per server worker, bare model and naive server alike.

        Default 1, the service's own default (``Settings.effective_torch_threads``): at
        these tensor sizes OpenMP barriers on shared cores cost more than they save.
        """
        return self.torch_threads or 1

    @property
    def roles(self) -> list[str]:
        return ["coarse", "fine"] if self.stage == "cascade" else [self.stage]


class BenchError(RuntimeError):
    """The benchmark cannot run (missing model, bad options); the message says why."""

"""Benchmark the artifact formats on the service's hot path: ``export`` against ``torchscript``.

    python -m bench.train.artifact_formats --coarse-run RUN --fine-run RUN --out formats.json

Exports each run in both formats (unsigned, into a temporary repository), loads them
with ``models.contract.artifact.load_artifact`` exactly as the service does, and times
what a request runs:

* coarse (two-tower): one ``user_vector`` pass on a batch of one, then
  ``torch.mv(torch.index_select(item_vectors, 0, rows), u)`` over ``--candidates``
  random rows of the artifact's precomputed item vectors (the service's path in
  ``service/ranking/stages.py``); the user tower alone is reported too;
* fine (MLP): the light net over ``--fine-rows`` rows whose item features are gathered
  rows and whose user/context features are one row broadcast (``expand``), as the fine
  stage builds them.

Next to the two artifact formats, ``export_module`` is the same program called through
``ExportedProgram.module()`` (torch's own wrapper, with pytree flattening and guard
checks), to show what :class:`models.contract.programs.ProgramRunner` saves. All variants
are timed in one process, one torch thread, interleaved round by round (median, p10, p90
of ``--repeats`` rounds after warm-up). Also: the exported programs' parity with the
trained model (from the exporter), file sizes, in-process load time and, in fresh
subprocesses, what the first load of each format costs in imports.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common.interleaved import time_interleaved
from bench.common.machine import machine_info
from models.contract.artifact import Artifact, load_artifact
from models.contract.manifest import PROGRAM_FILE, USER_PROGRAM_FILE
from training.export.export import ExportOptions, export_run
from training.export.parity import random_rows

FORMATS = ("export", "torchscript")
_COLD_IMPORT = {
    # what the first load of each format imports beyond torch (fresh interpreter)
    "export": "import torch._export.serde.serialize",
    "torchscript": "import torch.jit",
}


def _export_both(run: Path, repo: Path, name: str, parity_rows: int) -> dict[str, dict[str, Any]]:
    out = {}
    for fmt in FORMATS:
        options = ExportOptions(format=fmt, unsigned=True, parity_rows=parity_rows)
        result = export_run(run, repo / fmt, name, options)
        start = time.perf_counter()
        artifact = load_artifact(result.path, allow_unsigned=True)
        out[fmt] = {
            "artifact": artifact,
            "load_s": time.perf_counter() - start,
            "parity_max_abs_logit_diff": result.parity["max_abs_diff"],
            "model_bytes": artifact.manifest.metrics["export"]["model_bytes"],
        }
    return out


def _torch_wrapper(artifact: Artifact, fname: str) -> Callable[..., torch.Tensor]:
    """The program of ``fname`` as ``ExportedProgram.module()`` runs it."""
    return torch.export.load(io.BytesIO((artifact.path / fname).read_bytes())).module()


def _side(artifact: Artifact, rows: int, seed: int) -> dict[str, torch.Tensor]:
    m = artifact.manifest
    names = [*m.features.get("user", []), *m.features.get("context", [])]
    return random_rows(artifact.encoder, names, rows, seed).features


def coarse_cases(
    artifacts: dict[str, dict[str, Any]], candidates: int
) -> list[tuple[dict, Callable[[], Any]]]:
    first = artifacts["export"]["artifact"]
    user = _side(first, 1, seed=1)
    user = {k: user[k] for k in first.module.programs[USER_PROGRAM_FILE].names}
    vectors = torch.from_numpy(first.item_vectors)
    rows = torch.randint(0, len(vectors), (candidates,), generator=torch.Generator().manual_seed(2))
    towers = {fmt: a["artifact"].module.user_vector for fmt, a in artifacts.items()}
    towers["export_module"] = _torch_wrapper(first, USER_PROGRAM_FILE)
    cases = []
    for fmt, tower in towers.items():

        def request(tower=tower) -> torch.Tensor:
            u = tower(user)[0]
            return torch.mv(torch.index_select(vectors, 0, rows), u)

        base = {"stage": "coarse", "format": fmt, "candidates": candidates}
        cases.append(({**base, "path": "request"}, request))
        cases.append(({**base, "path": "user_tower"}, lambda tower=tower: tower(user)))
    return cases


def fine_cases(
    artifacts: dict[str, dict[str, Any]], n: int
) -> list[tuple[dict, Callable[[], Any]]]:
    first = artifacts["export"]["artifact"]
    item_names = first.manifest.features.get("item", []) + first.manifest.features.get("cross", [])
    feats = random_rows(first.encoder, item_names, n, seed=3).features
    for k, t in _side(first, 1, seed=4).items():
        feats[k] = t.expand(n, *t.shape[1:])
    # ExportedProgram.module() matches dict entries by position: keep the export's order
    feats = {k: feats[k] for k in first.module.programs[PROGRAM_FILE].names}
    modules = {fmt: a["artifact"].module for fmt, a in artifacts.items()}
    modules["export_module"] = _torch_wrapper(first, PROGRAM_FILE)
    return [
        ({"stage": "fine", "format": fmt, "candidates": n, "path": "request"}, lambda m=m: m(feats))
        for fmt, m in modules.items()
    ]


def cold_import_seconds(repeats: int = 3) -> dict[str, float]:
    """Median seconds a fresh interpreter (torch imported) spends importing each loader."""
    out = {}
    for fmt, stmt in _COLD_IMPORT.items():
        code = (
            f"import time, torch; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        )
        runs = [
            float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
            for _ in range(repeats)
        ]  # fmt: skip
        out[fmt] = statistics.median(runs)
    return out


def run_bench(
    coarse_run: Path, fine_run: Path, repeats: int, candidates: int, fine_rows: int
) -> dict[str, Any]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as repo:
        coarse = _export_both(coarse_run, Path(repo), "coarse", 4096)
        fine = _export_both(fine_run, Path(repo), "fine", 4096)
        cases = coarse_cases(coarse, candidates) + fine_cases(fine, fine_rows)
        results = time_interleaved(cases, repeats, warmup=20)
    ts = {(r["stage"], r["path"]): r["median_ms"] for r in results if r["format"] == "torchscript"}
    for r in results:
        r["ratio_to_torchscript"] = r["median_ms"] / ts[(r["stage"], r["path"])]
    facts = {
        stage: {
            fmt: {k: v for k, v in a.items() if k != "artifact"} for fmt, a in artifacts.items()
        }
        for stage, artifacts in (("coarse", coarse), ("fine", fine))
    }
    return {
        "coarse_run": str(coarse_run),
        "fine_run": str(fine_run),
        "torch": torch.__version__,
        "threads": 1,
        "repeats": repeats,
        "machine": machine_info() | {"load_average_after": os.getloadavg()},
        "artifacts": facts,
        "cold_import_s": cold_import_seconds(),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coarse-run", required=True, type=Path, help="trained two-tower run")
    parser.add_argument("--fine-run", required=True, type=Path, help="trained MLP run")
    parser.add_argument("--out", required=True, type=Path, help="JSON output file")
    parser.add_argument("--repeats", type=int, default=300, help="timed rounds")
    parser.add_argument("--candidates", type=int, default=10_000, help="coarse candidates")
    parser.add_argument("--fine-rows", type=int, default=500, help="fine candidates")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # TorchScript's, measured
    report = run_bench(
        args.coarse_run, args.fine_run, args.repeats, args.candidates, args.fine_rows
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'stage':<7} {'path':<11} {'format':<14} {'median ms':>10} {'p90':>8} {'x ts':>6}")
    for r in report["results"]:
        print(
            f"{r['stage']:<7} {r['path']:<11} {r['format']:<14} {r['median_ms']:>10.4f} "
            f"{r['p90_ms']:>8.4f} {r['ratio_to_torchscript']:>6.2f}"
        )
    print(json.dumps({"artifacts": report["artifacts"], "cold_import_s": report["cold_import_s"],
                      "machine": report["machine"]}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

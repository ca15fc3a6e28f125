"""Render benchmark JSON documents as the Markdown tables of ``docs/BENCHMARKS.md``.

Run: ``python -m bench.common.report bench/*.json`` (serve and train documents,
in any order). Numbers are copied from the JSON, never retyped by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.serve.run import cpu_per_request


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def median_steps(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per step, the median over runs of each run's p50 (steps every run reported)."""
    per_run = [r.get("server_steps_p50_ms") or {} for r in runs]
    common = [k for k in per_run[0] if all(k in p and p[k] is not None for p in per_run)]
    return {k: statistics.median(p[k] for p in per_run) for k in common}


def serve_table(docs: list[dict[str, Any]]) -> str:
    head = (
        "| stage | torch threads | candidates | offered req/s | achieved QPS | errors "
        "| p50 ms | p95 ms | p99 ms "
        "| p99.9 ms | SLO p99 ms | met | server p50 ms | bare p50 ms | server/bare | naive p50 ms "
        "| speed-up vs naive | max QPS under SLO / sustained | server CPU ms/req (naive) |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for d in docs:
        naive = d.get("naive") or {}
        naive_p50 = (naive.get("median") or {}).get("p50_ms")
        fm = (d.get("service") or {}).get("find_max")
        max_qps = "–"
        if fm:
            max_qps = _f(fm["max_rate"], 1) + (" (capped)" if fm["capped"] else "")
            max_qps += f" / {_f(d.get('sustained_qps'), 1)}"
            max_qps += f" (naive {_f(d.get('naive_max_qps_under_slo'), 1)}"
            max_qps += f" / {_f(d.get('naive_sustained_qps'), 1)})"
        lines.append(
            f"| {d['stage']} | {d['bare']['threads']} | {d['candidates']:,} | {_f(d['rate'], 0)} "
            f"| {_f(d['qps'], 1)} "
            f"| {d['errors']} | {_f(d['p50_ms'])} | {_f(d['p95_ms'])} | {_f(d['p99_ms'])} "
            f"| {_f(d['p999_ms'])} | {_f(d['slo_p99_ms'], 0)} "
            f"| {'yes' if d['meets_slo_at_rate'] else '**no**'} | {_f(d['server_time_p50_ms'], 3)} "
            f"| {_f(d['bare_p50_ms'], 3)} | {_f(d['server_time_ratio_vs_bare'])} "
            f"| {_f(naive_p50, 1)} | {_f(d['speedup_vs_naive'], 1)}× | {max_qps} "
            f"| {_f(d.get('server_cpu_ms_per_request'))} "
            f"({_f(cpu_per_request(d.get('naive')), 1)}) |"
        )
    notes = [f"- {d['stage']}: speed-up basis: {d['speedup_basis']}" for d in docs]
    for d in docs:
        steps = median_steps(d["service"]["runs"])
        if steps:
            notes.append(
                f"- {d['stage']}: service `timing_ms` steps, median over runs of each run's p50 "
                "(ms): " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
            )
    gen = [
        f"- {d['stage']}: load-generator check (null server, same bodies) at "
        f"{_f(d['generator_check']['median']['offered_rate'], 0)} req/s: p50 "
        f"{_f(d['generator_check']['median']['p50_ms'])} ms, p99 "
        f"{_f(d['generator_check']['median']['p99_ms'])} ms, send lag p99 "
        f"{_f(d['generator_check']['median']['send_lag_p99_ms'])} ms"
        for d in docs
        if d.get("generator_check")
    ]
    return "\n".join([*lines, "", *notes, *gen])


def train_table(doc: dict[str, Any]) -> str:
    lines = [
        f"`{doc['config_path']}` (task {doc['task']}, stage {doc['stage']}), batch "
        f"{doc['batch_size']}, {doc['steps']} timed steps after {doc['warmup_steps']} warm-up, "
        f"median of {doc['runs']} runs, {doc['torch_threads']} torch threads. Measured matmul: "
        f"**{_f(doc['matmul_gflops'], 1)} GFLOP/s** (fp32 1024³)"
        + (
            f", {_f(doc['matmul_gflops_model_shape'], 1)} GFLOP/s at the booster's largest layer "
            f"({'×'.join(map(str, doc['model_shape']))})"
            if doc.get("matmul_gflops_model_shape")
            else ""
        )
        + ".",
        "",
        "| variant | samples/s | s per run | train kFLOP/sample | achieved GFLOP/s | MFU |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in doc["variants"].items():
        label = f"joint ({v['variant']})" if name == "joint" else name
        lines.append(
            f"| {label} | {v['samples_per_s']:,.0f} | {v['seconds']:.2f} "
            f"| {v['train_flops_per_sample'] / 1e3:,.1f} | {v['achieved_gflops']:.2f} "
            f"| {v['mfu']:.1%} |"
        )
    g = doc["goals"]
    flops = doc["flops"]
    lines += [
        "",
        f"- joint / booster_alone wall time: **{doc['joint_over_booster_alone']:.2f}** "
        f"(goal ≤ {g['joint_over_booster_alone_max']}; "
        f"{'met' if g['met']['joint_over_booster_alone'] else 'missed'})",
        f"- joint / two-stage KD wall time: **{doc['joint_over_two_stage']:.2f}** "
        f"(goal ≤ {g['joint_over_two_stage_max']}; "
        f"{'met' if g['met']['joint_over_two_stage'] else 'missed'})",
        f"- MFU of the joint step: **{doc['mfu']:.1%}** (goal ≥ {g['mfu_min']:.0%}; "
        f"{'met' if g['met']['mfu'] else 'missed'})",
        f"- FLOPs: forward {flops['forward_per_sample']['booster'] / 1e3:,.1f} kFLOP/sample "
        f"(booster), {flops['forward_per_sample']['light'] / 1e3:,.1f} (light); convention: "
        f"{flops['convention']}; a counted joint step: "
        f"{flops['joint_step_counted_per_sample'] / 1e3:,.1f} kFLOP/sample vs "
        f"{flops['joint_step_convention_per_sample'] / 1e3:,.1f} by the convention",
    ]
    return "\n".join(lines)


def machine_line(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return (
        f"{m['date_utc']}: {m['cpu_model']}, {m['cores']} cores, torch {m['torch']}, "
        f"Python {m['python']}, load average at start "
        f"{[round(x, 1) for x in m.get('load_average_at_start') or []]}, "
        f"commit {(m.get('git_commit') or '?')[:12]}"
    )


def bodies_table(docs: list[dict[str, Any]]) -> str:
    """One row per serve document and body format (``--body``): size, latency at the
    benchmark rate, server time vs bare, the parse step, CPU and the max rate."""
    head = (
        "| stage | workers | body | KiB | catalogue | offered req/s | p50 ms | p99 ms "
        "| server p50 ms | parse ms | bare p50 ms | server/bare | server CPU ms/req "
        "| max req/s p99 ≤ SLO | sustained req/s | speed-up vs naive |"
    )
    lines = [head, "|---" * 16 + "|"]
    for d in docs:
        workers = (d.get("config") or {}).get("workers", 1)
        for body, h in (d.get("bodies") or {}).items():
            part = d["service_by_body"][body]
            steps = median_steps(part["runs"])
            lines.append(
                f"| {d['stage']} | {workers} | {body} | {h['body_bytes_mean'] / 1024:.0f} "
                f"| {d.get('catalogue_items', 0):,} | {_f(d['rate'], 0)} | {_f(h['p50_ms'])} "
                f"| {_f(h['p99_ms'])} | {_f(h['server_time_p50_ms'], 3)} "
                f"| {_f(steps.get('parse'), 3)} | {_f(d['bare_p50_ms'], 3)} "
                f"| {_f(h['server_time_ratio_vs_bare'])} | {_f(h['server_cpu_ms_per_request'])} "
                f"| {_f(h['max_qps_under_slo'], 1)} | {_f(h['sustained_qps'], 1)} "
                f"| {_f(h['speedup_vs_naive'], 1)} |"
            )
    return "\n".join(lines)


def render(paths: list[Path]) -> str:
    docs = [json.loads(p.read_text()) for p in paths]
    serve = [d for d in docs if d.get("benchmark") == "serve"]
    train = [d for d in docs if d.get("benchmark") == "train"]
    out: list[str] = []
    if serve:
        out += ["### Serving", "", serve_table(serve), ""]
        with_bodies = [d for d in serve if d.get("bodies")]
        if with_bodies:
            out += ["Per body format:", "", bodies_table(with_bodies), ""]
        out += ["Commands:", ""]
        out += [f"    {d['command']}" for d in serve]
        out += ["", "Machine:", ""] + [f"- {machine_line(d)}" for d in serve] + [""]
    for d in train:
        out += ["### Training", "", train_table(d), "", "Command:", "", f"    {d['command']}"]
        out += ["", f"Machine: {machine_line(d)}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(render(args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

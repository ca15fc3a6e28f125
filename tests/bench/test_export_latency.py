"""bench_export: every format is measured, checked against eager and sized."""

from __future__ import annotations

import json

import pytest

from bench.train.export_latency import INT8_VARIANTS, SIZES, main
from tests.helpers.export import make_run, write_run_dir


@pytest.mark.slow  # builds and times seven variants (~15-35 s on 2 busy cores)
def test_bench_reports_every_format_with_parity_and_size(tmp_path):
    run_dir = write_run_dir(make_run(tmp_path, "two_tower", user_buckets=5_000))
    out = tmp_path / "bench.json"
    assert main(["--run", str(run_dir), "--out", str(out), "--repeats", "2"]) == 0
    report = json.loads(out.read_text())
    assert report["kind"] == "two_tower" and report["repeats"] == 2
    rows = report["results"]
    formats = {r["format"] for r in rows}
    assert {"eager", "torchscript", "torchscript_frozen", *INT8_VARIANTS} <= formats
    for fmt in formats:
        for path in ("forward", "serving") if fmt not in ("torch_export",) else ("forward",):
            got = sorted(r["candidates"] for r in rows if r["format"] == fmt and r["path"] == path)
            assert got == sorted(SIZES), (fmt, path)
    for r in rows:
        assert r["median_ms"] > 0 and r["p10_ms"] <= r["p90_ms"]
        if r["format"] == INT8_VARIANTS[-1]:  # the exporter's last int8 fallback
            assert r["max_abs_probability_diff_vs_eager"] <= 1e-2, r
        elif r["quantization"] == "none":
            assert r["max_abs_logit_diff_vs_eager"] <= 1e-5, r
        if r["format"] == "eager":
            assert r["ratio_to_eager"] == 1.0
    size = {r["format"]: r["size_bytes"] for r in rows}
    assert size["eager"] is None
    assert 2 * size["int8_torchscript"] <= size["torchscript_frozen"]  # tiny: code weighs in
    assert any(r["max_abs_logit_diff_vs_eager"] > 0 for r in rows if r["quantization"] == "int8")

"""Ablation runner: every applicable variant, one report row each, shared data."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from tests.helpers.trainer import tiny_config, write_tiny_data
from training.ablate.report import add_gap_closed, format_markdown
from training.ablate.run import run_ablation
from training.ablate.variants import VARIANTS, applicable_variants, variant_config
from training.data.prepare import prepare_data
from training.distill import Hint, Variant
from training.loop.trainer import TrainingError, TrainOptions

QUIET = TrainOptions(progress=False, threads=1, checkpoint_every=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("ablate") / "data", rows=3_000)


@pytest.mark.slow
def test_ablation_writes_a_row_for_every_applicable_variant(data_dir, tmp_path):
    cfg = tiny_config("rocket", epochs=1, batch_size=512)
    data = prepare_data(data_dir, cfg)
    rows = run_ablation(cfg, data, tmp_path / "abl", QUIET)
    assert [r["variant"] for r in rows] == [v.value for v in VARIANTS]  # ctr has privileged
    report = json.loads((tmp_path / "abl" / "report.json").read_text())
    assert [r["variant"] for r in report] == [v.value for v in VARIANTS]
    by = {r["variant"]: r for r in report}
    for row in report:
        assert {"variant", "light", "booster", "gap_closed_auc", "train_seconds"} <= set(row)
        assert row["train_seconds"] > 0
        assert (tmp_path / "abl" / row["variant"] / "metrics.json").exists()
    assert by["light_alone"]["booster"] is None and by["booster_alone"]["light"] is None
    assert by["light_alone"]["gap_closed_auc"] is None
    # two-stage KD distils the booster_alone teacher and pays for training it
    assert by["two_stage_kd"]["booster"]["auc"] == pytest.approx(
        by["booster_alone"]["booster"]["auc"]
    )
    assert by["two_stage_kd"]["train_seconds"] > by["booster_alone"]["train_seconds"]
    # gap closed follows its definition
    base = by["light_alone"]["light"]["auc"]
    for name in ("two_stage_kd", "rocket", "rocket_no_gradient_block", "pfd", "pfd_md"):
        row = by[name]
        if row["booster"]["auc"] > base:
            expected = (row["light"]["auc"] - base) / (row["booster"]["auc"] - base)
            assert row["gap_closed_auc"] == pytest.approx(expected), name
        else:  # no gap to close
            assert row["gap_closed_auc"] is None, name
    # PFD's teacher has the student's size, PFD+MD the config's booster
    assert by["pfd"]["params"]["booster"] < by["pfd_md"]["params"]["booster"]
    md = (tmp_path / "abl" / "report.md").read_text()
    for v in VARIANTS:
        assert f"| {v.value} |" in md
    assert (tmp_path / "abl" / "report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_subset_and_reuse_of_finished_runs(data_dir, tmp_path):
    cfg = tiny_config("rocket", epochs=1, batch_size=1024)
    data = prepare_data(data_dir, cfg, max_rows=1500)
    rows = run_ablation(cfg, data, tmp_path / "abl", QUIET, variants=["light_alone", "rocket"])
    assert [r["variant"] for r in rows] == ["light_alone", "rocket"]
    before = (tmp_path / "abl" / "rocket" / "model.pt").stat().st_mtime_ns
    again = run_ablation(
        cfg, data, tmp_path / "abl", QUIET, variants=["light_alone", "rocket"], reuse_finished=True
    )
    assert (tmp_path / "abl" / "rocket" / "model.pt").stat().st_mtime_ns == before
    assert again[1]["light"]["auc"] == pytest.approx(rows[1]["light"]["auc"])


def test_pfd_variants_need_privileged_features(data_dir):
    cfg = tiny_config("rocket")
    data = prepare_data(data_dir, cfg, max_rows=500)
    assert Variant.PFD in applicable_variants(cfg, data)
    # a schema task without privileged features: drop them from the task
    schema = data.dataset.schema
    task = dataclasses.replace(schema.tasks["ctr"], privileged=())
    data.dataset.schema = dataclasses.replace(schema, tasks={**schema.tasks, "ctr": task})
    assert applicable_variants(cfg, data) == [
        v for v in VARIANTS if v not in (Variant.PFD, Variant.PFD_MD)
    ]
    with pytest.raises(TrainingError, match="privileged"):
        run_ablation(cfg, data, "/nonexistent-never-written", QUIET, variants=["pfd"])


def test_variant_configs_keep_the_family_settings():
    rocket = tiny_config("rocket", distill={"lambda": 0.3})
    assert variant_config(rocket, Variant.ROCKET_NO_GRADIENT_BLOCK).distill.resolved_lambda == 0.3
    assert (
        not variant_config(rocket, Variant.ROCKET_NO_GRADIENT_BLOCK)
        .distill.settings(10)
        .gradient_block
    )
    pfd = variant_config(rocket, Variant.PFD)
    assert pfd.distill.resolved_hint is Hint.SOFT_BCE and pfd.distill.resolved_lambda == 0.5
    assert pfd.model.booster == "mlp" and pfd.model.booster_dims == rocket.model.light_dims
    assert variant_config(rocket, Variant.PFD_MD).model == rocket.model
    assert variant_config(rocket, Variant.LIGHT_ALONE).distill.resolved_hint is Hint.OFF


def test_markdown_marks_missing_values():
    row = {
        "variant": "light_alone",
        "light": {"auc": 0.7, "gauc": math.nan},
        "booster": None,
        "gap_closed_auc": None,
        "train_seconds": 1.0,
        "params": {"light": 1000, "booster": 2_000_000},
        "flops_per_candidate": {"light": 10, "booster": 3e9},
    }
    md = format_markdown([row])
    assert "| light_alone | 0.7000 | +0.0000 | – |" in md
    assert "2.0M" in md and "3.0G" in md


def test_gap_closed_is_set_only_where_there_is_a_gap():
    def row(variant, light, booster):
        light_m = None if light is None else {"auc": light}
        booster_m = None if booster is None else {"auc": booster}
        return {"variant": variant, "light": light_m, "booster": booster_m}

    rows = [
        row("light_alone", 0.70, None),
        row("booster_alone", None, 0.80),
        row("rocket", 0.72, 0.78),
        row("rocket_no_gradient_block", 0.69, 0.68),  # teacher worse than the baseline
        row("two_stage_kd", 0.75, 0.80),
    ]
    add_gap_closed(rows)
    gaps = {r["variant"]: r["gap_closed_auc"] for r in rows}
    assert gaps["light_alone"] is None and gaps["booster_alone"] is None
    assert gaps["rocket"] == pytest.approx(0.25)
    assert gaps["two_stage_kd"] == pytest.approx(0.5)
    assert gaps["rocket_no_gradient_block"] is None

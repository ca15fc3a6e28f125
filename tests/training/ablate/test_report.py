"""Ablation runner and report: every applicable variant over seeds, numbers from stored scores."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from models.provenance import json_safe
from tests.helpers.trainer import tiny_config, write_tiny_data
from training.ablate.auc import weighted_auc
from training.ablate.report import ONE_SEED_NOTE, format_markdown, format_runs, format_stats
from training.ablate.representable import representable_teacher_on
from training.ablate.run import run_ablation
from training.ablate.runs import SCORES_FILE, RunOutcome, RunScores, frozen_teacher
from training.ablate.stats import auc_interval, describe_gain, paired_difference
from training.ablate.summary import summarise
from training.ablate.t_interval import mean_ci
from training.ablate.variants import VARIANTS, applicable_variants
from training.data.prepare import prepare_data
from training.distill.rules import Variant
from training.loop.build import load_trained_model
from training.loop.errors import TrainingError
from training.loop.evaluation import predict
from training.loop.options import TrainOptions

QUIET = TrainOptions(progress=False, threads=1, checkpoint_every=0)


def assert_same_stat(stored, computed):
    """A report.json statistic equals a stats result (NaN stored as null, lists as lists)."""
    expected = json_safe(computed.to_dict())
    assert stored.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float | list):
            assert stored[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        else:
            assert stored[key] == value, key


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("ablate") / "data", rows=3_000)


@pytest.mark.slow
def test_one_seed_writes_a_row_for_every_applicable_variant(data_dir, tmp_path):
    cfg = tiny_config("rocket", epochs=1, batch_size=512)
    data = prepare_data(data_dir, cfg)
    report = run_ablation(cfg, data, tmp_path / "abl", QUIET, n_boot=200)
    names = [v.value for v in VARIANTS]  # ctr has privileged features: every variant applies
    assert [r["variant"] for r in report["rows"]] == names
    stored = json.loads((tmp_path / "abl" / "report.json").read_text())
    assert stored == report and stored["seeds"] == [0]
    by = {r["variant"]: r for r in stored["rows"]}
    for name in names:
        run_dir = tmp_path / "abl" / name / "seed0"
        assert (run_dir / "metrics.json").exists() and (run_dir / SCORES_FILE).exists()
    assert by["light_alone"]["booster_auc"] is None and by["booster_alone"]["light_auc"] is None
    assert by["light_alone"]["delta_vs_light_alone"] is None
    # one seed: no t-interval over seeds, but a bootstrap interval over requests
    assert by["rocket"]["light_auc"]["low"] is None
    boot = by["rocket"]["light_auc_bootstrap"]
    assert boot["low"] < boot["mean"] < boot["high"]
    delta = by["rocket"]["delta_vs_light_alone"]
    assert delta["low"] <= delta["mean"] <= delta["high"] and delta["n_seeds"] == 1
    # two-stage KD distils the booster_alone teacher of the same seed and pays for it
    assert by["two_stage_kd"]["booster_auc"]["mean"] == pytest.approx(
        by["booster_alone"]["booster_auc"]["mean"]
    )
    assert by["two_stage_kd"]["train_seconds"] > by["booster_alone"]["train_seconds"]
    # PFD's teacher has the student's size, PFD+MD the config's booster
    assert by["pfd"]["params"]["booster"] < by["pfd_md"]["params"]["booster"]
    md = (tmp_path / "abl" / "report.md").read_text()
    assert ONE_SEED_NOTE in md
    for name in names:
        assert f"| {name} |" in md
    assert (tmp_path / "abl" / "report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_report_numbers_are_the_stats_of_the_stored_scores(data_dir, tmp_path):
    cfg = tiny_config("rocket", epochs=1, batch_size=512)
    data = prepare_data(data_dir, cfg)
    out = tmp_path / "abl"
    overrides = {Variant.ROCKET: {"distill": {"lambda": 0.25}}}
    report = run_ablation(
        cfg,
        data,
        out,
        QUIET,
        variants=["light_alone", "two_stage_kd", "rocket"],
        seeds=2,
        overrides=overrides,
        n_boot=300,
        bootstrap_seed=5,
    )
    # two_stage_kd trained its teacher per seed, but only the asked-for rows are reported
    assert [r["variant"] for r in report["rows"]] == ["light_alone", "two_stage_kd", "rocket"]
    assert report["seeds"] == [0, 1]
    scores = {
        v: [RunScores.load(out / v / f"seed{s}" / SCORES_FILE) for s in (0, 1)]
        for v in ("light_alone", "two_stage_kd", "rocket", "booster_alone")
    }
    label, group = scores["light_alone"][0].label, scores["light_alone"][0].group
    for runs in scores.values():  # every run scored the same test rows
        for r in runs:
            assert np.array_equal(r.label, label) and np.array_equal(r.group, group)
    assert np.array_equal(group, data.test.group.numpy())
    by = {r["variant"]: r for r in report["rows"]}
    base = [s.light for s in scores["light_alone"]]
    for name in ("light_alone", "two_stage_kd", "rocket"):
        light = [s.light for s in scores[name]]
        per_seed = [weighted_auc(label, z) for z in light]
        # the stored logits give the trainer's own test AUC of each run
        for s, value in enumerate(per_seed):
            metrics = json.loads((out / name / f"seed{s}" / "metrics.json").read_text())
            assert value == pytest.approx(metrics["light"]["auc"], abs=1e-12)
        assert_same_stat(by[name]["light_auc"], mean_ci(per_seed))
        assert_same_stat(
            by[name]["light_auc_bootstrap"], auc_interval(label, group, light, n_boot=300, seed=5)
        )
        if name != "light_alone":
            expected = paired_difference(label, group, base, light, n_boot=300, seed=5)
            assert_same_stat(by[name]["delta_vs_light_alone"], expected)
            teacher = np.mean([weighted_auc(label, s.booster) for s in scores[name]])
            base_mean = np.mean([weighted_auc(label, z) for z in base])
            gap = by[name]["gap_closed_auc"]
            if teacher > base_mean:
                assert gap == pytest.approx((np.mean(per_seed) - base_mean) / (teacher - base_mean))
            else:
                assert gap is None
            assert describe_gain(expected) in (out / "report.md").read_text()
            # the representable teacher: its stored logits give the row's AUC and gap
            rep = [weighted_auc(label, sc.representable) for sc in scores[name]]
            assert_same_stat(by[name]["representable_auc"], mean_ci(rep))
            rep_gap = by[name]["gap_closed_representable"]
            if np.mean(rep) > base_mean:
                assert rep_gap == pytest.approx(
                    (np.mean(per_seed) - base_mean) / (np.mean(rep) - base_mean)
                )
            else:
                assert rep_gap is None
        else:
            assert all(sc.representable is None for sc in scores[name])
            assert by[name]["representable_auc"] is None
    # the stored representable logits are the run's booster on the representable features
    model = load_trained_model(out / "rocket" / "seed0")
    np.testing.assert_allclose(
        scores["rocket"][0].representable, representable_teacher_on(model, data), rtol=1e-6
    )
    # two-stage KD's teacher is the booster_alone run of the same seed
    for s in (0, 1):
        np.testing.assert_array_equal(
            scores["two_stage_kd"][s].booster, scores["booster_alone"][s].booster
        )
    # the seed and the per-variant override reached the run configs
    rocket1 = json.loads((out / "rocket" / "seed1" / "config.json").read_text())
    assert rocket1["seed"] == 1 and rocket1["distill"]["lambda"] == 0.25
    light1 = json.loads((out / "light_alone" / "seed1" / "config.json").read_text())
    assert light1["seed"] == 1 and light1["distill"]["lambda"] is None
    assert report["variant_overrides"] == {"rocket": {"distill": {"lambda": 0.25}}}


@pytest.mark.slow
def test_reuse_keeps_a_matching_run_and_refuses_another_config(data_dir, tmp_path):
    cfg = tiny_config("rocket", epochs=1, batch_size=1024)
    data = prepare_data(data_dir, cfg, max_rows=1500)
    out = tmp_path / "abl"
    first = run_ablation(cfg, data, out, QUIET, variants=["light_alone", "rocket"], n_boot=50)
    model = out / "rocket" / "seed0" / "model.pt"
    before = model.stat().st_mtime_ns
    again = run_ablation(
        cfg, data, out, QUIET, variants=["light_alone", "rocket"], reuse_finished=True, n_boot=50
    )
    assert model.stat().st_mtime_ns == before
    assert again["rows"] == [
        {**row, "runs": [{**r, "reused": True} for r in row["runs"]]} for row in first["rows"]
    ]
    changed = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_dense=0.01))
    with pytest.raises(TrainingError, match=r"optim\.lr_dense \(0\.003 → 0\.01\)"):
        run_ablation(
            changed, data, out, QUIET, variants=["light_alone"], reuse_finished=True, n_boot=50
        )
    smaller = prepare_data(data_dir, cfg, max_rows=1000)
    with pytest.raises(TrainingError, match="train_rows"):
        run_ablation(
            cfg, smaller, out, QUIET, variants=["light_alone"], reuse_finished=True, n_boot=50
        )


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


def test_an_ablation_without_a_test_split_is_refused(data_dir, tmp_path):
    cfg = tiny_config("rocket")
    data = dataclasses.replace(prepare_data(data_dir, cfg, max_rows=500), test=None)
    with pytest.raises(TrainingError, match="test split"):
        run_ablation(cfg, data, tmp_path / "abl", QUIET, variants=["light_alone"])


def _row(variant, light=None, booster=None, delta=None):
    stat = {"mean": light, "low": None, "high": None} if light is not None else None
    return {
        "variant": variant,
        "settings": "labels only",
        "light_auc": stat,
        "light_auc_bootstrap": None,
        "booster_auc": {"mean": booster, "low": None, "high": None} if booster else None,
        "delta_vs_light_alone": delta,
        "gap_closed_auc": None,
        "light": {"auc": light, "gauc": None} if light is not None else None,
        "booster": None,
        "train_seconds": 1.0,
        "params": {"light": 1000, "booster": 2_000_000},
        "flops_per_candidate": {"light": 10, "booster": 3e9},
        "runs": [{"best_epoch": 0}],
    }


def test_markdown_marks_missing_values_and_an_interval_that_includes_zero():
    delta = {
        "mean": 0.002,
        "low": -0.001,
        "high": 0.005,
        "p_value_two_sided": 0.3,
        "per_seed": [0.002, 0.002],
    }
    report = {
        "seeds": [0, 1],
        "bootstrap": {"n_boot": 100},
        "rows": [_row("light_alone", 0.7), _row("rocket", 0.702, 0.75, delta)],
    }
    md = format_markdown(report)
    assert "| light_alone | labels only | 0.7000 | – | – | – | – | – | – | – | – |" in md
    assert "+0.0020 [-0.0010, +0.0050] (interval includes 0) | 0.300 |" in md
    assert ONE_SEED_NOTE not in md
    runs = format_runs(report["rows"])
    assert "2.0M" in runs and "3.0G" in runs
    one_seed = {**report, "seeds": [0]}
    assert ONE_SEED_NOTE in format_markdown(one_seed)


def test_a_p_value_of_zero_reads_as_below_the_resolution():
    delta = {"mean": 0.01, "low": 0.005, "high": 0.02, "p_value_two_sided": 0.0, "per_seed": []}
    report = {
        "seeds": [0, 1, 2],
        "bootstrap": {"n_boot": 1000},
        "rows": [_row("light_alone", 0.7), _row("pfd", 0.71, 0.75, delta)],
    }
    md = format_markdown(report)
    assert "+0.0100 [+0.0050, +0.0200] | < 0.002 |" in md


def _outcome(light, booster, label, group, representable=None):
    metrics = {
        "light": {"auc": weighted_auc(label, light)},
        "booster": {"auc": weighted_auc(label, booster)},
        "train_seconds": 1.0,
        "params": {"light": 1, "booster": 2},
        "flops_per_candidate": {"light": 1, "booster": 2},
        "light_calibrated": {"after": {"calibration": 0.97}},
    }
    return RunOutcome(metrics, RunScores(light, booster, label, group, representable), False)


def test_summary_reports_the_gap_closed_against_the_representable_teacher():
    rng = np.random.default_rng(0)
    n = 4_000
    label = (rng.random(n) < 0.2).astype(np.float64)
    group = np.arange(n) // 10
    signal = label + rng.normal(0, 1.0, n)

    def noisy(scale):
        return signal + rng.normal(0, scale, n)

    base = [noisy(2.0), noisy(2.0)]
    light = [noisy(1.0), noisy(1.0)]
    booster = [noisy(0.1), noisy(0.1)]
    rep = [noisy(0.6), noisy(0.6)]
    outcomes = {
        Variant.LIGHT_ALONE: [_outcome(z, z, label, group) for z in base],
        Variant.ROCKET: [_outcome(z, b, label, group, r) for z, b, r in zip(light, booster, rep)],
    }
    rows = summarise(outcomes, [0, 1], {}, n_boot=50)
    by = {r["variant"]: r for r in rows}
    mean = lambda zs: float(np.mean([weighted_auc(label, z) for z in zs]))  # noqa: E731
    expected_rep = (mean(light) - mean(base)) / (mean(rep) - mean(base))
    expected_booster = (mean(light) - mean(base)) / (mean(booster) - mean(base))
    rocket = by["rocket"]
    assert rocket["representable_auc"]["mean"] == pytest.approx(mean(rep))
    assert rocket["gap_closed_representable"] == pytest.approx(expected_rep)
    assert rocket["gap_closed_auc"] == pytest.approx(expected_booster)
    assert expected_rep > expected_booster  # the representable teacher is the nearer target
    assert by["light_alone"]["representable_auc"] is None
    assert rocket["light_calibration_after"] == pytest.approx(0.97)
    table = format_stats({"seeds": [0, 1], "bootstrap": {"n_boot": 50}, "rows": rows})
    assert "gap closed (representable) |" in table
    assert f"| {mean(rep):.4f} | {expected_rep * 100:.1f}% |" in table
    # a run without representable scores (a log with no privileged features): no column value
    no_rep = {
        Variant.LIGHT_ALONE: outcomes[Variant.LIGHT_ALONE],
        Variant.ROCKET: [_outcome(z, b, label, group) for z, b in zip(light, booster)],
    }
    row = {r["variant"]: r for r in summarise(no_rep, [0, 1], {}, n_boot=50)}["rocket"]
    assert row["representable_auc"] is None and row["gap_closed_representable"] is None


@pytest.mark.slow
def test_a_frozen_teacher_is_the_booster_scored_not_the_final_models(data_dir, tmp_path):
    """After the freeze the shared tables move on: the stored booster is the snapshot."""
    cfg = tiny_config(
        "rocket",
        epochs=3,
        batch_size=512,
        distill={"teacher_stop": "best_valid", "teacher_max_epochs": 1},
    )
    data = prepare_data(data_dir, cfg)
    out = tmp_path / "abl"
    run_ablation(cfg, data, out, QUIET, variants=["light_alone", "rocket"], n_boot=20)
    run = out / "rocket" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["teacher_stop"]["frozen"]
    scores = RunScores.load(run / SCORES_FILE)
    # the trainer evaluates the frozen teacher: the stored logits give its AUC ...
    assert weighted_auc(scores.label, scores.booster) == pytest.approx(
        metrics["booster"]["auc"], abs=1e-9
    )
    # ... which is not the final model's booster (its shared tables trained on)
    final = load_trained_model(run)
    final_logits = predict(final, data.test, 4096)["booster"]
    assert not np.allclose(final_logits, scores.booster)
    teacher = frozen_teacher(run, final, metrics)
    np.testing.assert_allclose(
        scores.representable, representable_teacher_on(teacher, data), rtol=1e-6
    )

"""`rocketrank bench train`: FLOP accounting, the timed loop and the JSON document.

Tiny synthetic data, a handful of steps: what is checked is the arithmetic and
that every variant trains the right nets -- never how fast anything is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from bench.common.report import render
from bench.train.command import add_arguments, run
from bench.train.run import (
    forward_flops,
    joint_variant,
    largest_linear,
    matmul_gflops,
    measured_step_flops,
    run_train_bench,
    time_variant,
)
from training.ablate.variants import with_variant
from training.config.run import load_config
from training.data.prepare import prepare_data
from training.distill.rules import Variant
from training.loop.build import build_model, seed_everything
from training.synth.generator import write


@pytest.fixture(scope="module")
def fine(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-train")
    write(root / "data", rows=3000, seed=0)
    cfg = load_config("configs/fine_ctr.yaml")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=256))
    return cfg, prepare_data(root / "data", cfg, cache=False), root


def test_matmul_rate_is_positive_and_largest_linear_is_found():
    assert matmul_gflops(64, 64, 64, repeats=3) > 0
    net = torch.nn.Sequential(torch.nn.Linear(8, 300), torch.nn.ReLU(), torch.nn.Linear(300, 2))
    assert largest_linear(net) == (8, 300)
    assert largest_linear(torch.nn.ReLU()) is None


def test_forward_flops_match_the_mlp_layer_arithmetic(fine):
    cfg, data, _ = fine
    model, _ = build_model(cfg, data)
    flops = forward_flops(model, data)
    # light net = an MLP: 2·in·out per Linear, per sample
    linears = [m for m in model.light.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    expected = sum(2 * m.in_features * m.out_features for m in linears)
    assert flops["light"] == pytest.approx(expected)
    assert flops["booster"] > 10 * flops["light"]  # DCN-v2 booster vs the small light MLP


def test_three_times_forward_convention_matches_a_counted_training_step(fine):
    cfg, data, _ = fine
    model, _ = build_model(cfg, data)
    fwd = forward_flops(model, data)
    counted = measured_step_flops(cfg, data)
    # backward of a matmul is two matmuls of the same size; only the first layer's
    # input gradient (into the embeddings) and tiny terms make it differ from 3×
    assert counted == pytest.approx(3 * (fwd["booster"] + fwd["light"]), rel=0.1)


def test_time_variant_trains_only_the_nets_of_the_variant(fine):
    cfg, data, _ = fine
    light_cfg = with_variant(cfg, Variant.LIGHT_ALONE)
    timing, model = time_variant(light_cfg, data, steps=2, warmup_steps=1)
    assert timing["samples"] == 2 * 256 and timing["seconds"] > 0
    assert timing["samples_per_s"] == pytest.approx(timing["samples"] / timing["seconds"])
    seed_everything(light_cfg.seed)  # the initialisation time_variant started from
    fresh, _ = build_model(light_cfg, data)
    booster_untouched = all(
        torch.equal(p, dict(fresh.named_parameters())[n])
        for n, p in model.booster_only_parameters()
    )
    light_moved = any(
        not torch.equal(p, dict(fresh.named_parameters())[n])
        for n, p in model.light_only_parameters()
    )
    assert booster_untouched and light_moved


def test_joint_variant_is_the_configs_distillation_variant(fine):
    cfg, _, _ = fine
    assert joint_variant(cfg) is Variant.ROCKET
    assert joint_variant(with_variant(cfg, Variant.PFD)) is Variant.PFD
    assert joint_variant(with_variant(cfg, Variant.BOOSTER_ALONE)) is Variant.ROCKET


@pytest.mark.slow
def test_run_train_bench_ratios_and_mfu_are_consistent(fine):
    cfg, data, _ = fine
    doc = run_train_bench(
        cfg, data, steps=2, warmup_steps=1, runs=2, matmul_repeats=3, log=lambda _: None
    )
    v = doc["variants"]
    assert set(v) == {
        "booster_alone",
        "light_alone",
        "joint",
        "two_stage_kd_student",
        "two_stage_kd",
    }
    for run_ in range(2):
        both = v["booster_alone"]["runs"][run_]["seconds"]
        both += v["two_stage_kd_student"]["runs"][run_]["seconds"]
        assert v["two_stage_kd"]["runs"][run_]["seconds"] == pytest.approx(both)
    for name, part in v.items():
        assert part["mfu"] == pytest.approx(
            part["samples_per_s"] * part["train_flops_per_sample"] / 1e9 / doc["matmul_gflops"]
        ), name
    f = doc["flops"]["forward_per_sample"]
    assert v["joint"]["train_flops_per_sample"] == pytest.approx(3 * (f["booster"] + f["light"]))
    assert v["two_stage_kd"]["train_flops_per_sample"] == pytest.approx(
        4 * f["booster"] + 3 * f["light"]
    )
    assert doc["mfu"] == v["joint"]["mfu"]
    assert 0 < doc["joint_over_two_stage"] < doc["joint_over_booster_alone"] * 1e3


@pytest.mark.slow
def test_cli_writes_json_with_every_figure(fine, capsys):
    cfg_path = "configs/fine_ctr.yaml"
    _, _, root = fine
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = root / "train.json"
    args = parser.parse_args(
        [
            *("--config", cfg_path, "--data", str(root / "data"), "--out", str(out)),
            *("--steps", "1", "--warmup-steps", "0", "--runs", "1", "--matmul-repeats", "2"),
        ]
    )
    assert run(args) == 0
    doc = json.loads(out.read_text())
    for key in (
        "matmul_gflops",
        "mfu",
        "joint_over_booster_alone",
        "joint_over_two_stage",
        "machine",
        "flops",
        "variants",
    ):
        assert key in doc
    assert "joint (rocket)" in capsys.readouterr().out
    md = render([out])
    assert "| joint (rocket) |" in md and "MFU of the joint step" in md


def test_cli_rejects_bad_options(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            *("--config", "configs/fine_ctr.yaml", "--data", str(tmp_path), "--out", "x.json"),
            *("--steps", "0"),
        ]
    )
    assert run(args) == 2
    assert "--steps" in capsys.readouterr().err

"""`rocketrank ablate`: seeds, per-variant overrides and the --reuse refusal through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rocketrank.cli import main
from tests.helpers.trainer import tiny_config, write_tiny_data


def _config(tmp_path: Path, variant: str = "pfd") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(variant, epochs=1, batch_size=512).to_dict()))
    return path


def test_a_bad_variant_config_fails_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = tmp_path / "variants.yaml"
    overrides.write_text("pfd: {distill: {lamda: 0.7}}\n")
    code = main([
        "ablate", "--config", str(_config(tmp_path)), "--data", str(tmp_path / "no-data"),
        "--out", str(tmp_path / "abl"), "--variant-config", str(overrides),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "variants.yaml: pfd: distill.lamda: unknown key" in err
    assert not (tmp_path / "abl").exists()


def test_set_overrides_are_validated_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "ablate", "--config", str(_config(tmp_path)), "--data", str(tmp_path / "no-data"),
        "--out", str(tmp_path / "abl"), "--set", "optim.epoch=3",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "optim.epoch" in err and "--set" in err
    assert not (tmp_path / "abl").exists()


def test_seeds_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ablate", "--config", "c.yaml", "--data", "d", "--out", "o", "--seeds", "0"])
    assert exc.value.code == 2
    assert "--seeds: must be ≥ 1" in capsys.readouterr().err


@pytest.mark.slow
def test_seeds_overrides_and_reuse_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_tiny_data(tmp_path / "data", rows=1_500)
    overrides = tmp_path / "variants.yaml"
    overrides.write_text("pfd: {distill: {lambda: 0.7}}\n")
    out = tmp_path / "abl"
    args = [
        "ablate", "--config", str(_config(tmp_path)), "--data", str(data), "--out", str(out),
        "--variants", "light_alone", "pfd", "--seeds", "2", "--n-boot", "50", "--no-progress",
        "--set", "optim.lr_dense=0.002",
    ]  # fmt: skip
    assert main([*args, "--variant-config", str(overrides)]) == 0
    printed = capsys.readouterr().out
    assert "Δ vs light_alone" in printed and "| pfd |" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0, 1]
    stored = json.loads((out / "light_alone" / "seed0" / "config.json").read_text())
    assert stored["optim"]["lr_dense"] == 0.002  # --set reaches every variant's run
    pfd = next(r for r in report["rows"] if r["variant"] == "pfd")
    assert pfd["delta_vs_light_alone"]["n_seeds"] == 2
    assert "λ=0.7" in pfd["settings"]
    for s in (0, 1):
        stored = json.loads((out / "pfd" / f"seed{s}" / "config.json").read_text())
        assert (stored["seed"], stored["distill"]["lambda"]) == (s, 0.7)
    # the same runs are reused; without the override pfd's stored config differs
    assert main([*args, "--variant-config", str(overrides), "--reuse"]) == 0
    capsys.readouterr()
    assert main([*args, "--reuse"]) == 2
    err = capsys.readouterr().err
    assert "pfd/seed0/config.json differs" in err and "distill.lambda (0.7 → None)" in err

"""`rocketrank data check`: summary, exit codes, every problem listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rocketrank.cli import main
from tests.helpers.data import make_log, write_data_dir
from tests.helpers.repo import ROOT


def test_valid_directory_exits_zero_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = make_log(100, 1)
    valid.loc[0, "item_id"] = 7  # one unseen item → OOV rate 1% on valid
    root = write_data_dir(tmp_path, frames={"valid": valid})
    report = tmp_path / "summary.json"
    code = main(["data", "check", "--data", str(root), "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "data check OK" in out
    assert "train" in out and "300" in out and "click" in out
    summary = json.loads(report.read_text())
    assert summary["valid"] is True and summary["tasks"] == ["ctr", "cvr"]
    assert summary["splits"]["valid"]["rows"] == 100
    assert summary["oov_rate"]["valid"]["item_id"] == pytest.approx(0.01)
    assert summary["features"]["tags"]["cardinality"] > 2
    assert summary["splits"]["train"]["imputed"]["price"] > 0
    assert "imputed NaN/inf" in out and "price" in out


def test_dropped_required_column_fails_and_every_problem_is_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = make_log(100, 1).drop(columns=["price"])
    test = make_log(100, 2)
    test.loc[3, "click"] = 5
    root = write_data_dir(tmp_path, fmt="csv", frames={"valid": valid, "test": test})
    code = main(["data", "check", "--data", str(root), "--task", "ctr"])
    captured = capsys.readouterr()
    out = captured.err
    assert code == 1
    assert "schema" in captured.out and "FAILED" not in captured.out  # the summary stays on stdout
    assert "FAILED: 2 problem(s)" in out
    assert "[valid.price] required column is missing" in out
    assert "[test.click] labels must be 0 or 1" in out


def test_unknown_task_and_unusable_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_data_dir(tmp_path / "d")
    assert main(["data", "check", "--data", str(root), "--task", "ltv"]) == 1
    assert "unknown task 'ltv'" in capsys.readouterr().err
    (root / "schema.yaml").write_text("ids: {user: user_id}\nbogus: 1\n")
    assert main(["data", "check", "--data", str(root)]) == 2
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
    assert main(["data", "check", "--data", str(tmp_path / "absent")]) == 2


def test_command_line_entry_point(tmp_path: Path) -> None:
    root = write_data_dir(tmp_path, rows=(60, 30, 30))
    (root / "test.parquet").unlink()
    make_log(30, 2).drop(columns=["user_id"]).to_parquet(root / "test.parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "rocketrank", "data", "check", "--data", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[test.user_id] required column is missing" in proc.stderr

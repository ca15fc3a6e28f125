"""The README's quick tour, run as written (at small size): every command must
succeed and the service must end ready, ranking a real user's real items.

The fenced block under "## Quick tour" is extracted from README.md and run by
bash with ``set -euo pipefail`` in a scratch directory. Only these edits are
made, and each must find its target (so the README cannot drift from the test):
the install line is dropped (this test runs inside the installed venv), the
log shrinks to 4,000 rows, training runs one epoch, and port 8000 becomes a
free port (other services may hold 8000).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.net import free_port
from tests.helpers.repo import ROOT

INSTALL_LINE = "make install && source .venv/bin/activate"


def tour_commands(readme: str) -> list[str]:
    """The command lines of the quick tour's ```bash block, comments removed."""
    section = readme.split("## Quick tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md: no ```bash block under '## Quick tour'"
    lines = []
    for line in block.group(1).splitlines():
        code = re.sub(r"\s+#\s.*$", "", line).rstrip()
        if code:
            lines.append(code)
    return lines


def _json_objects(text: str) -> list[dict]:
    """The JSON objects printed back to back (curl adds no newline after a body)."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while at < len(text):
        obj, at = decoder.raw_decode(text, at)
        objects.append(obj)
    return objects


def small_tour(lines: list[str], port: int) -> list[str]:
    assert lines[0] == INSTALL_LINE, lines[0]
    out = []
    for line in lines[1:]:
        if line.startswith("rocketrank synth "):
            assert "--rows 1000000" in line, line
            line = line.replace("--rows 1000000", "--rows 4000")
        if line.startswith("rocketrank train "):
            line += " --epochs 1 --no-progress"
        line = line.replace("8000", str(port))
        out.append(line)
    assert any(str(port) in line and line.startswith("rocketrank serve") for line in out)
    return out


def test_the_tour_block_is_what_this_test_expects() -> None:
    lines = tour_commands((ROOT / "README.md").read_text())
    commands = [line.split()[1] for line in lines if line.startswith("rocketrank ")]
    assert commands[:2] == ["synth", "data"]
    assert {"train", "export", "eval", "serve", "sample-request"} <= set(commands)
    exported = {line.split("--name ")[1].split()[0] for line in lines if " export " in line}
    assert exported == {"coarse", "fine"}  # what `serve` waits for by default
    assert lines[-1] == "kill %1"


@pytest.mark.slow
def test_readme_quick_tour_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    lines = small_tour(tour_commands((ROOT / "README.md").read_text()), port)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    # Echo each command before it runs, so a failure names the line that failed.
    script = "set -euo pipefail\n" + "".join(
        f"echo '>>> {i}' >&2\n{line}\n" for i, line in enumerate(lines)
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # the background service if `kill %1` did not run
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    failed = re.findall(r">>> (\d+)", err)
    where = lines[int(failed[-1])] if failed else "?"
    assert proc.returncode == 0, f"tour failed at: {where}\n{err[-4000:]}"
    answer = _json_objects(out.strip().splitlines()[-1])[-1]
    request = json.loads((tmp_path / "request.json").read_text())
    assert answer["stage"] == request["stage"] == "cascade"
    assert set(answer["model_versions"]) == {"coarse", "fine"}
    assert len(answer["items"]) == request["top_k"]
    assert answer["unknown_user"] is False and answer["unknown_item_ids"] == []
    assert answer["degraded"] is False

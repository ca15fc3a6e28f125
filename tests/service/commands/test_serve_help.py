"""`rocketrank serve --help` lists every ROCKETRANK_* setting with its default,
generated from the Settings model (so a new setting cannot be left out)."""

from __future__ import annotations

import subprocess
import sys

from service.settings import ENV_PREFIX, Settings, settings_table
from tests.helpers.repo import ROOT


def test_serve_help_lists_every_setting_with_its_default():
    out = subprocess.run(
        [sys.executable, "-m", "rocketrank", "serve", "--help"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in Settings.model_fields:
        env = ENV_PREFIX + name.upper()
        assert f"  {env} (default " in out, env
    rows = {env: default for env, default, _ in settings_table()}
    assert rows["ROCKETRANK_MAX_INFLIGHT"] == "64"
    assert rows["ROCKETRANK_REPO"] == "(required)"
    assert rows["ROCKETRANK_ADMIN_TOKEN"] == "(unset)"
    assert all(text for _, _, text in settings_table())  # every setting is described

"""Where the tests run: the repository root and whether this is CI."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Under CI a missing tool (redis-server, prometheus) is a failure, not a skip.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

__all__ = ["IN_CI", "ROOT"]

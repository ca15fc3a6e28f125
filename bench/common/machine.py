"""What a benchmark ran on: CPU model, cores, load, torch threads, library versions, date.

The one machine description of every benchmark document (serve and train).
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.provenance import git_commit


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """JSON-ready description of the machine and software (torch imported lazily).

    Keys: ``git_commit`` (``+dirty`` with uncommitted changes), ``date_utc``,
    ``cpu_model``, ``cores``, ``load_average_at_start``, ``python``, ``torch``,
    ``torch_threads`` (intra-op threads of this process) and ``platform``.
    """
    import torch

    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "git_commit": git_commit(Path(__file__).resolve().parent, mark_dirty=True),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": load,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


__all__ = ["cpu_model", "machine_info"]

"""``rocketrank train --nproc N``: run the same command under torchrun on this machine.

The launcher is torch's own (``python -m torch.distributed.run``, i.e.
``torchrun``): it starts N worker processes with ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` set, and each worker runs
``rocketrank train`` with the same options, which joins the process group
(:func:`training.loop.distributed.init_from_env`). Rendezvous is torch's c10d store
on a free local port, so concurrent runs on one machine do not collide.

For several machines, call torchrun yourself on every node (``docs/SCALING.md``)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29400 --rdzv-id run-42 \\
        -m rocketrank.cli train --config C --data D --out RUN
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config.errors import ConfigError
from training.config.run import load_config
from training.loop.distributed import DistContext
from training.loop.errors import DistributedError

# Namespace entries the dispatcher adds, and the launcher's own option
_NOT_FORWARDED = frozenset({"_module", "_path", "command_path", "nproc"})


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for the c10d rendezvous store)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def forwarded_argv(args: argparse.Namespace) -> list[str]:
    """The command-line options of ``args`` again, for the workers.

    ``--flag`` for true booleans, ``--name value`` for set values; ``None`` and
    false flags are the defaults and are left out. Option names are the
    ``dest`` with ``_`` → ``-`` (the train CLI's convention).
    """
    argv: list[str] = []
    for key, value in vars(args).items():
        if key in _NOT_FORWARDED or value is None or value is False:
            continue
        option = "--" + key.replace("_", "-")
        if value is True:
            argv.append(option)
        elif isinstance(value, str | int | float | Path):
            argv += [option, str(value)]
        else:
            raise TypeError(f"cannot forward option {option}={value!r} to the workers")
    return argv


def torchrun_prefix(nproc: int, port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run`` for ``nproc`` local workers on a free port.

    The worker's own ``-m MODULE ...`` follows it.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    port = port or free_port()
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--max-restarts",
        "0",
    ]


def torchrun_command(
    nproc: int, worker_argv: Sequence[str], *, port: int | None = None
) -> list[str]:
    """``python -m torch.distributed.run ... -m rocketrank.cli train <worker_argv>``."""
    return [*torchrun_prefix(nproc, port), "-m", "rocketrank.cli", "train", *worker_argv]


def launch(nproc: int, args: argparse.Namespace, *, threads: int | None = None) -> int:
    """Run ``rocketrank train`` with ``args`` in ``nproc`` processes; torchrun's exit code.

    A config N processes cannot train like one (``DistContext.check_config``)
    is refused before anything starts (exit code 2).

    Args:
        nproc: worker processes on this machine.
        args: the parsed train options (forwarded as they are, minus ``--nproc``).
        threads: ``OMP_NUM_THREADS`` of every worker (torchrun would otherwise set 1
            with a warning); the workers' ``--threads`` still sets torch's count.
    """
    # refuse an unsupported config here, once, instead of in every worker behind torchrun's
    # failure report
    try:
        DistContext(rank=0, world_size=nproc, backend="gloo").check_config(load_config(args.config))
    except (ConfigError, DistributedError) as exc:
        print(f"rocketrank train: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads or 1))
    cmd = torchrun_command(nproc, forwarded_argv(args))
    return subprocess.run(cmd, env=env, check=False).returncode


__all__ = ["forwarded_argv", "free_port", "launch", "torchrun_command"]

"""`rocketrank serve`: start the scoring service under uvicorn.

Options become `ROCKETRANK_*` environment variables (so every uvicorn worker
builds the same `Settings`); anything not given on the command line comes
from the environment. The admin token is only read from
`ROCKETRANK_ADMIN_TOKEN` (a command-line flag would show in `ps`).

With `--workers N > 1` Prometheus runs in multiprocess mode: a fresh
`PROMETHEUS_MULTIPROC_DIR` (a temporary directory unless set) is emptied
before the workers start. Torch runs one intra-op thread per worker unless
`ROCKETRANK_TORCH_THREADS` asks for more (capped at cores // N).

Each worker may hold `ROCKETRANK_LIMIT_CONCURRENCY` connections, one file
descriptor each, plus its own files: the soft open-file limit is raised to
cover that (up to the hard limit, inherited by the workers), with a warning when
the hard limit is too low for the configured cap.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from service.settings import SettingsError, load_settings, settings_table

_OPTION_ENV = {
    "repo": "ROCKETRANK_REPO",
    "features": "ROCKETRANK_FEATURES_DIR",
    "redis": "ROCKETRANK_REDIS_URL",
    "redis_prefix": "ROCKETRANK_REDIS_PREFIX",
    "workers": "ROCKETRANK_WORKERS",
    "coarse_model": "ROCKETRANK_COARSE_MODEL",
    "fine_model": "ROCKETRANK_FINE_MODEL",
    "reload_interval": "ROCKETRANK_RELOAD_INTERVAL_S",
    "log_level": "ROCKETRANK_LOG_LEVEL",
}


def settings_epilog() -> str:
    """Every ``ROCKETRANK_*`` setting with its default, generated from the Settings model."""
    lines = ["settings (environment variables; a flag above sets the same variable):"]
    for env, default, text in settings_table():
        lines.append(f"  {env} (default {default})")
        for part in textwrap.wrap(text.replace("``", "`"), 74):
            lines.append(f"      {part}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = settings_epilog()
    parser.add_argument("--repo", type=Path, help="model repository (REPO/NAME/current)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--features", type=Path, help="folder with users.parquet and items.parquet (embedded)"
    )
    source.add_argument("--redis", help="Redis feature store URL (see `rocketrank features load`)")
    parser.add_argument("--redis-prefix", help="key prefix in Redis (default rocketrank:)")
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--coarse-model", help="model name for the coarse stage ('' = none)")
    parser.add_argument("--fine-model", help="model name for the fine stage ('' = none)")
    parser.add_argument("--reload-interval", type=float, help="seconds between pointer polls")
    parser.add_argument("--log-level", help="logging level (default INFO)")


# descriptors a worker needs besides its connections: model and data files, the
# event loop, Redis, the multiprocess metric files, logging
_OWN_FILES = 256


def _raise_open_file_limit(limit_concurrency: int) -> None:
    """Soft RLIMIT_NOFILE ≥ the connection cap plus the worker's own files (≤ hard limit)."""
    need = limit_concurrency + _OWN_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < need:
        print(
            f"rocketrank serve: warning: the open-file limit ({soft}) is below "
            f"ROCKETRANK_LIMIT_CONCURRENCY ({limit_concurrency}) + {_OWN_FILES}; connections "
            "beyond it fail at accept instead of getting a 503: raise `ulimit -n` or lower "
            "ROCKETRANK_LIMIT_CONCURRENCY",
            file=sys.stderr,
        )


def _prepare_multiprocess_dir() -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="rocketrank-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # Files of a previous run would be summed into this run's counters.
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def run(args: argparse.Namespace) -> int:
    for option, env in _OPTION_ENV.items():
        value = getattr(args, option)
        if value is not None:
            os.environ[env] = str(value)
    if args.features is not None:
        os.environ.pop("ROCKETRANK_REDIS_URL", None)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"rocketrank serve: {exc}", file=sys.stderr)
        return 2
    if not settings.repo.is_dir():
        print(f"rocketrank serve: model repository {settings.repo} does not exist", file=sys.stderr)
        return 2

    _raise_open_file_limit(settings.limit_concurrency)

    import uvicorn

    from service.api.protocol import PROTOCOL

    options = {
        "host": args.host,
        "port": args.port,
        "loop": "uvloop",
        # httptools with a header read deadline (uvicorn has none for new connections)
        "http": PROTOCOL,
        "access_log": False,
        "log_level": settings.log_level.lower(),
        "timeout_graceful_shutdown": 10,
        # connection cap: uvicorn answers 503 beyond it, before the app sees the request
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive_s,
    }
    if settings.workers > 1:
        _prepare_multiprocess_dir()
        uvicorn.run("service.main:app", workers=settings.workers, **options)
    else:
        from service.app import create_app

        uvicorn.run(create_app(settings), **options)
    return 0

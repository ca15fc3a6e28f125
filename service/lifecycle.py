"""What the service does when a worker starts and stops: torch thread setup,
opening the feature store, loading models, and draining on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from service.api.deps import ServiceState
from service.feature_store.base import FeatureStore
from service.feature_store.embedded import EmbeddedFeatureStore
from service.feature_store.redis_store import RedisFeatureStore
from service.metrics import ServiceMetrics
from service.ranking.ranker import Ranker
from service.registry import ModelRegistry
from service.settings import Settings


def open_store(settings: Settings) -> FeatureStore:
    """Redis when a URL is configured, else the embedded Parquet store."""
    if settings.redis_url:
        return RedisFeatureStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            version=settings.redis_version,
            timeout_ms=settings.redis_timeout_ms,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
            check_interval_s=settings.redis_check_interval_s,
        )
    assert settings.features_dir is not None
    return EmbeddedFeatureStore(
        settings.features_dir, settings.user_id_column, settings.item_id_column
    )


def configure_torch(threads: int) -> None:
    """Intra-op threads per worker, one inter-op thread."""
    torch.set_num_threads(threads)
    # Fails when already set in this process (several apps in one test run).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def drain_on_signals(state: ServiceState, delay_s: float) -> None:
    """Make SIGTERM/SIGINT turn readiness false *before* uvicorn stops accepting.

    uvicorn installs its own handlers around the lifespan; this wraps them (main
    thread only, i.e. under uvicorn, not under TestClient): mark the state as
    shutting down, then hand the signal to uvicorn after ``delay_s``.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
            state.shutting_down = True
            if delay_s > 0:
                # call_soon_threadsafe is safe from a signal handler; call_later is not.
                loop.call_soon_threadsafe(loop.call_later, delay_s, previous, signum, frame)
            else:
                previous(signum, frame)

        signal.signal(sig, handler)


def lifespan_for(settings: Settings) -> Callable[[FastAPI], Any]:
    """The app's lifespan: build the :class:`ServiceState` at start, release it at the end."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_torch(settings.effective_torch_threads)
        metrics = ServiceMetrics()
        store = await run_in_threadpool(open_store, settings)
        registry = ModelRegistry(settings, store, metrics)
        state = ServiceState(
            settings=settings,
            metrics=metrics,
            store=store,
            registry=registry,
            ranker=Ranker(store, metrics),
            executor=ThreadPoolExecutor(settings.rank_threads, thread_name_prefix="rank"),
        )
        app.state.service = state
        drain_on_signals(state, settings.shutdown_delay_s)
        await run_in_threadpool(registry.start)
        try:
            yield
        finally:
            state.shutting_down = True
            registry.stop()
            state.executor.shutdown(wait=True)
            store.close()
            metrics.worker_exit()

    return lifespan

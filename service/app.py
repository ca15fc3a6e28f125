"""The FastAPI application factory: ``create_app(settings)`` builds the app only.

Run it with ``rocketrank serve`` (which sets the environment and starts
uvicorn), or ``uvicorn --factory service.app:create_app`` with ``ROCKETRANK_*``
variables set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from service.api import admin, health, rank
from service.api.deps import ServiceState
from service.api.schemas import RankRequest
from service.feature_store.base import FeatureStore
from service.feature_store.embedded import EmbeddedFeatureStore
from service.feature_store.redis_store import RedisFeatureStore
from service.metrics import ServiceMetrics
from service.ranking.stages import Ranker
from service.registry import ModelRegistry
from service.settings import Settings, load_settings

log = logging.getLogger("service")


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
        )
    assert settings.features_dir is not None
    return EmbeddedFeatureStore(
        settings.features_dir, settings.user_id_column, settings.item_id_column
    )


def _configure_torch(threads: int) -> None:
    torch.set_num_threads(threads)
    # Fails when already set in this process (several apps in one test run).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _drain_on_signals(state: ServiceState, delay_s: float) -> None:
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


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with the RankRequest schema (the rank route reads its body itself)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        request_schema = RankRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(request_schema.pop("$defs", {}))
        components["RankRequest"] = request_schema
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the scoring service.

    Args:
        settings: configuration; read from ``ROCKETRANK_*`` environment variables when
            omitted (that is how uvicorn workers get it).
    """
    settings = settings or load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _configure_torch(settings.effective_torch_threads)
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
        _drain_on_signals(state, settings.shutdown_delay_s)
        await run_in_threadpool(registry.start)
        try:
            yield
        finally:
            state.shutting_down = True
            registry.stop()
            state.executor.shutdown(wait=True)
            store.close()
            metrics.worker_exit()

    app = FastAPI(
        title="rocketrank scoring service",
        version="1",
        description="Coarse (two-tower) and fine (MLP) ranking with light nets trained "
        "jointly with a booster (Rocket Launching, Privileged Features Distillation).",
        lifespan=lifespan,
    )
    app.include_router(rank.router)
    # First match wins: the bare ASGI rank endpoint serves, the FastAPI route documents.
    app.router.routes.insert(0, rank.fast_route)
    app.include_router(health.router)
    app.include_router(admin.router)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app

"""The FastAPI application factory: ``create_app(settings)`` builds the app only
(what runs at start and stop is in :mod:`service.lifecycle`).

Run it with ``rocketrank serve`` (which sets the environment and starts
uvicorn), or ``uvicorn service.main:app`` with ``ROCKETRANK_*`` variables set.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from service.api import admin, health, rank, rank_openapi
from service.lifecycle import lifespan_for
from service.settings import Settings, load_settings

log = logging.getLogger("service")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated OpenAPI document plus ``POST /v1/rank`` (a bare ASGI route)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        operation, models = rank_openapi.openapi_operation()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model, mode in models:
            model_schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}", mode=mode
            )
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        schema["paths"] = {"/v1/rank": {"post": operation}, **schema.get("paths", {})}
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
    app = FastAPI(
        title="rocketrank scoring service",
        version="1",
        description="Coarse (two-tower) and fine (MLP) ranking with light nets trained "
        "jointly with a booster (Rocket Launching, Privileged Features Distillation).",
        lifespan=lifespan_for(settings),
    )
    app.router.routes.append(rank.route)
    app.include_router(health.router)
    app.include_router(admin.router)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app

"""Liveness, readiness, metrics and the loaded-model listing."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from service.api.deps import StateDep
from service.api.schemas import ModelsResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """200 when every configured stage has a loaded, warmed model and no shutdown is under way."""
    models = state.registry.snapshot()
    missing = [r for r in state.settings.stage_models if r not in models]
    ready = not missing and not state.shutting_down
    body = {
        "ready": ready,
        "models": {r: m.version for r, m in models.items()},
        "missing": missing,
        "shutting_down": state.shutting_down,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition (all workers in multiprocess mode)."""
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)


@router.get("/v1/models", response_model=ModelsResponse)
async def models(state: StateDep) -> dict:
    """Loaded models (stage, name, version, features) and the feature store's status."""
    return {"models": state.registry.describe(), "feature_store": state.store.status()}

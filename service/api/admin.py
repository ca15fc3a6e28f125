"""``POST /admin/reload`` and ``POST /admin/rollback`` (bearer token; off without one).

Both act on this worker at once; other workers follow the repository's
``current`` pointers on their next poll (a rollback moves the pointer).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from models.contract.repository_reader import RepositoryError
from service.api.deps import AdminDep, StateDep
from service.api.schemas import AdminResponse, ErrorResponse, RollbackRequest

router = APIRouter(prefix="/admin", tags=["admin"])

_RESPONSES = {
    400: {"model": ErrorResponse, "description": "the body could not be parsed"},
    401: {"model": ErrorResponse, "description": "no bearer token"},
    403: {"model": ErrorResponse, "description": "wrong token"},
    404: {"model": ErrorResponse, "description": "admin endpoints are disabled (no token set)"},
    409: {"model": AdminResponse, "description": "a version was refused; old one keeps serving"},
}


def _answer(outcomes: list) -> JSONResponse:
    body = {"results": [o.to_dict() for o in outcomes]}
    failed = any(o.result == "failed" for o in outcomes)
    return JSONResponse(body, status_code=409 if failed else 200)


@router.post("/reload", response_model=AdminResponse, responses=_RESPONSES)
async def reload(
    state: StateDep,
    _: AdminDep,
    force: Annotated[bool, Query(description="reload even if the version is unchanged")] = False,
) -> JSONResponse:
    """Load the versions the repository's `current` pointers name (verify, warm up, swap)."""
    outcomes = await run_in_threadpool(state.registry.reload, force)
    return _answer(outcomes)


@router.post(
    "/rollback",
    response_model=AdminResponse,
    responses={
        **_RESPONSES,
        409: {
            "model": AdminResponse | ErrorResponse,
            "description": "a version was refused, or there is no earlier version to go back to",
        },
    },
)
async def rollback(
    state: StateDep, _: AdminDep, request: Annotated[RollbackRequest | None, Body()] = None
) -> JSONResponse:
    """Move `current` back one promotion for a stage (or all) and serve that version."""
    roles = [request.stage] if request is not None and request.stage else None
    try:
        outcomes = await run_in_threadpool(state.registry.rollback, roles)
    except RepositoryError as exc:
        message = state.registry.sanitize(str(exc))
        return JSONResponse({"detail": message}, status_code=409)
    return _answer(outcomes)

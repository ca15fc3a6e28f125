"""Per-app service state and the FastAPI dependencies that hand it to routes."""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from service.feature_store.base import FeatureStore
from service.metrics import ServiceMetrics
from service.ranking.ranker import Ranker
from service.registry import ModelRegistry
from service.settings import Settings


@dataclass
class ServiceState:
    """Everything a request needs; built in the app's lifespan.

    Attributes:
        executor: threads that run parsing, feature fetch and inference, so CPU
            work never blocks the event loop.
        shutting_down: set when the lifespan ends (``/readyz`` turns false).
        inflight: rank requests admitted and not yet answered (event loop only).
        buffered_bytes: request-body bytes held by requests still being read.
    """

    settings: Settings
    metrics: ServiceMetrics
    store: FeatureStore
    registry: ModelRegistry
    ranker: Ranker
    executor: ThreadPoolExecutor
    shutting_down: bool = False
    inflight: int = 0
    buffered_bytes: int = 0


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer-token check of the admin endpoints; they do not exist without a token."""
    token = state.settings.admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(status_code=404, detail="Not Found")
    scheme, _, supplied = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not supplied:
        raise HTTPException(
            status_code=401,
            detail="admin endpoints need 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(supplied.strip().encode(), token.get_secret_value().encode()):
        raise HTTPException(status_code=403, detail="invalid admin token")


AdminDep = Annotated[None, Depends(require_admin)]

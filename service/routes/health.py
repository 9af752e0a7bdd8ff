"""Liveness and readiness probes (status codes are what orchestrators read)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..schemas import Health
from .deps import Service

router = APIRouter(prefix="/health", tags=["health"])


@router.get(
    "/live",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="200 while the process runs; 503 when an inference thread has died or has been "
    "inside one batch longer than stuck_batch_timeout_s",
)
async def live(service: Service) -> JSONResponse:
    problem = service.liveness_problem()
    if problem is None:
        return JSONResponse(Health(status="alive").model_dump(exclude_none=True))
    return JSONResponse(Health(status=problem[0], detail=problem[1]).model_dump(), status_code=503)


@router.get(
    "/ready",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="200 once every model is loaded and warmed up; 503 before, while shutting down, "
    "and while a model's batches keep failing (unhealthy_after_failures in a row)",
)
async def ready(service: Service) -> JSONResponse:
    problem = service.not_ready()
    if problem is None:
        return JSONResponse(Health(status="ready").model_dump(exclude_none=True))
    return JSONResponse(
        Health(status=problem[0], detail=problem[1]).model_dump(),
        status_code=503,
        headers={"Retry-After": "1"},
    )

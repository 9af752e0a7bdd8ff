"""Liveness and readiness probes (status codes are what orchestrators read)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..schemas import Health
from .deps import Service

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health, summary="The process is up")
async def live() -> Health:
    return Health(status="alive")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}},
            summary="200 once every model is loaded and warmed up; 503 before, and while shutting down")
async def ready(service: Service) -> JSONResponse:
    if service.draining:
        health = Health(status="draining", detail="the server is shutting down")
    elif service.failure is not None:
        health = Health(status="failed", detail=f"the model failed to load: {service.failure}")
    elif not service.ready:
        health = Health(status="loading", detail="the model is loading and warming up")
    else:
        return JSONResponse(Health(status="ready").model_dump(exclude_none=True))
    return JSONResponse(health.model_dump(exclude_none=True), status_code=503,
                        headers={"Retry-After": "1"})

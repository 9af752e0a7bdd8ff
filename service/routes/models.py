"""GET /models: what is served, by which backend, with which batching settings."""

from __future__ import annotations

from fastapi import APIRouter

from ..schemas import ModelDescription, ModelsResponse
from .deps import Service

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, summary="The served models")
async def models(service: Service) -> ModelsResponse:
    return ModelsResponse(
        models=[ModelDescription(**runtime.describe(service.ready)) for runtime in service.runtimes]
    )

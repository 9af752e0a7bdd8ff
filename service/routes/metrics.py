"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .deps import Service

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(service: Service) -> Response:
    return Response(service.metrics.render(), media_type=service.metrics.content_type)

"""What every v2 route shares: where they live, the one version served, the input names, and
the protocol's flat error shape, answered and documented."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from export import triton

from ... import v2protocol as v2
from ...errors import ServiceError
from ...schemas import V2Error, V2ModelReady
from ..images import RETRY_AFTER

PREFIX = "/v2"
BYTES_INPUT = "image_bytes"
VERSION = triton.VERSION  # the one version served, as in the Triton repositories we write


class V2Route(APIRoute):
    """Answers this router's errors in the protocol's flat shape (our own routes keep theirs)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return _error(exc.status, exc.message, exc.headers)
            except RequestValidationError as exc:
                parts = [
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors()
                ]
                return _error(400, "; ".join(parts) or "invalid request")
            except StarletteHTTPException as exc:
                return _error(exc.status_code, str(exc.detail), exc.headers)

        return handle


def v2_router() -> APIRouter:
    """A router for some of the v2 routes, under the prefix and answering errors in its shape."""
    return APIRouter(prefix=PREFIX, tags=["open inference protocol (v2)"], route_class=V2Route)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(v2.error_body(message), status_code=status, headers=headers)


# the statuses the routes document, each in the protocol's error shape
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error, "description": text}
    for code, text in {
        400: "malformed request: JSON, tensor names, datatypes, shapes, byte counts, images",
        404: "no such model or version",
        408: "the body did not arrive before the deadline",
        413: "body or images per request over the limit",
        415: "compressed request bodies are not supported",
        500: "the batch that held the request failed",
        503: "not ready, shutting down or overloaded (with Retry-After)",
        504: "the deadline passed; the request was not computed",
    }.items()
}
ERRORS[503]["headers"] = RETRY_AFTER
# what a model's metadata and readiness can answer: no body, no batch
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: ERRORS[404],
    503: {**ERRORS[503], "description": "the models are still loading (with Retry-After)"},
}
READY_ERRORS: dict[int | str, dict[str, Any]] = {
    404: ERRORS[404],
    503: {
        "model": V2ModelReady | V2Error,
        "headers": RETRY_AFTER,
        "description": "not ready (the model's readiness and why), or still loading",
    },
}

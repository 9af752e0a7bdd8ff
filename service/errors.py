"""Errors a client can cause or meet, each one HTTP status and one JSON shape:

{"error": {"status": 413, "type": "image_too_large", "message": "...", "request_id": "..."}}
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .logs import request_id_var


class ServiceError(Exception):
    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details


class BadImage(ServiceError):  # undecodable, truncated, empty
    status, type = 400, "bad_image"


class BadRequest(ServiceError):  # malformed body (e.g. broken multipart framing)
    status, type = 400, "bad_request"


class NotFound(ServiceError):  # no such model (or version); /detect without a detector
    status, type = 404, "not_found"


class RequestTimeout(ServiceError):  # the body did not arrive before the deadline
    status, type = 408, "request_timeout"

    def __init__(self, message: str, **kwargs: Any) -> None:
        # the rest of the body may still be arriving: the connection is not worth keeping
        super().__init__(message, headers={"Connection": "close"}, **kwargs)


class PayloadTooLarge(ServiceError):  # body bytes, images per request, pixels per image
    status, type = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, type = 415, "unsupported_media_type"


class InvalidParameter(ServiceError):
    status, type = 422, "invalid_parameter"


class Unavailable(ServiceError):  # not ready, shutting down, overloaded
    status, type = 503, "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)}, **kwargs)


class DeadlineExceeded(ServiceError):
    status, type = 504, "deadline_exceeded"


class InferenceFailed(ServiceError):
    status, type = 500, "inference_failed"


class ClientDisconnected(Exception):
    """The client went away; nothing is sent back (logged as status 499)."""


def error_body(status: int, type_: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "status": status,
        "type": type_,
        "message": message,
        "request_id": request_id_var.get(),
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "header", "body"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
    return "; ".join(parts) or "invalid parameters"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status, exc.type, exc.message, exc.details),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return JSONResponse(
            error_body(422, InvalidParameter.type, _validation_message(details), details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(exc.status_code, kind, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

"""Per-request context: request id in and out, one access log line, request metrics.

A plain ASGI middleware (no BaseHTTPMiddleware), so streaming and disconnects pass through.
It is also the last line of defence: an unexpected exception becomes a JSON 500 here.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ClientDisconnected, error_body
from .logs import new_request_id, request_id_var
from .metrics import Metrics

log = logging.getLogger("service.access")
_QUIET = ("/health/", "/metrics")  # probes and scrapes log at debug level


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(Headers(scope=scope).get("x-request-id"))
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.monotonic()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnected:
            status = status or 499
        except Exception:
            log.exception("unhandled error")
            if not status:
                status = 500
                body = json.dumps(error_body(500, "internal_error", "internal server error")).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.monotonic() - started
            if scope["state"].get("read_timeout"):
                status = 408  # the connection's body deadline answered (service.connections)
            status = status or 499  # nothing sent: the client went away
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_latency.labels(endpoint).observe(elapsed)
            path = scope.get("path", "")
            level = logging.DEBUG if path.startswith(_QUIET) and status < 400 else logging.INFO
            client = scope.get("client")
            log.log(
                level,
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "endpoint": endpoint,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    **scope["state"].get("log", {}),
                },
            )
            request_id_var.reset(token)

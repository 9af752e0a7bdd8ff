"""Bearer-token access control (``--api-keys``), default deny: with keys set, every path needs
``Authorization: Bearer <key>`` except the API docs, and health and metrics unless
``--protect-health`` / ``--protect-metrics`` say otherwise.

TorchServe turned token auth on by default after CVE-2023-43654; here it is opt-in (a server on
the loopback, or behind an ingress that authenticates, needs none) but one setting away. Keys
are compared as SHA-256 digests with ``hmac.compare_digest``, against every key each time: the
time taken tells neither a key's bytes, nor its length, nor which key matched. TLS is the
ingress's (docs/deploy.md, "Access control and TLS").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_body

HEALTH_PATHS = frozenset({"/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})
METRICS_PATHS = frozenset({"/metrics"})
# The schema says what the API is, not what it holds; Swagger UI needs it to offer "Authorize".
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
REALM = 'Bearer realm="dat-serve"'


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


class BearerAuth:
    """A plain ASGI middleware: refuses before the route runs or the body is read."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], open_paths: frozenset[str]) -> None:
        self.app = app
        self._digests = [_digest(k) for k in keys]
        self.open_paths = open_paths

    @staticmethod
    def open_paths_for(protect_health: bool, protect_metrics: bool) -> frozenset[str]:
        return (
            DOCS_PATHS
            | (frozenset() if protect_health else HEALTH_PATHS)
            | (frozenset() if protect_metrics else METRICS_PATHS)
        )

    def allows(self, presented: bytes) -> bool:
        digest = _digest(presented)
        matched = False
        for key in self._digests:  # every key, matched or not: constant time
            matched |= hmac.compare_digest(digest, key)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, token = (Headers(scope=scope).get("authorization") or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if token and self.allows(token.encode("latin-1")):
            await self.app(scope, receive, send)
            return
        # RFC 6750: a wrong token is invalid_token; no token at all gets the challenge alone
        challenge = REALM + (', error="invalid_token"' if token else "")
        message = (
            "the API key is not valid"
            if token
            else "an API key is required: send 'Authorization: Bearer <key>'"
        )
        if scope["path"].startswith("/v2"):
            body = {"error": message}  # the Open Inference Protocol's error shape
        else:
            body = error_body(401, "unauthorized", message)
        content = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

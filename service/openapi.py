"""The OpenAPI document, made to say what the server does: which routes need a key."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .schemas import ErrorResponse
from .settings import Settings

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _error_ref(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if ErrorResponse.__name__ not in components:
        components.update(ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
                          .pop("$defs", {}))
        components[ErrorResponse.__name__] = ErrorResponse.model_json_schema(
            ref_template="#/components/schemas/{model}")
    return {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}


def _declare_auth(schema: dict[str, Any], open_paths: frozenset[str]) -> None:
    """With keys set: the bearer scheme, and on every route that needs a key its 401."""
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    error = _error_ref(schema)
    for path, item in schema.get("paths", {}).items():
        if path in open_paths:
            continue
        for method in _METHODS:
            if method in item:
                operation = item[method]
                operation["security"] = [{"bearer": []}]
                v2 = path.startswith("/v2")
                content = ({"schema": {"$ref": "#/components/schemas/V2Error"}} if v2
                           else {"schema": error})
                operation.setdefault("responses", {})["401"] = {
                    "description": "no API key, or not a valid one (WWW-Authenticate: Bearer)",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": {"application/json": content}}


def install_openapi(app: FastAPI, settings: Settings, open_paths: frozenset[str]) -> None:
    """Replaces ``app.openapi`` with one that builds FastAPI's document once and completes it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            if settings.api_key_list:
                _declare_auth(schema, open_paths)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

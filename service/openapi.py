"""The OpenAPI document, made to say what the server does.

FastAPI's document is built from the route signatures, which say less or other than the
server: an optional header or query parameter is typed ``integer | null`` though a request can
only leave it out; its 422 body is FastAPI's ``HTTPValidationError``, not our error; bounds that
depend on the served models (``top_k`` up to the number of labels, ``points`` only where the
backend gives them, ``masks`` only from an instance segmentation model) are unknown when the
routes are declared. This module finishes the document: once the models have loaded it is
built with their bounds and kept; before, it is built afresh at each request with the
settings' bounds alone.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .routes.images import RETRY_AFTER
from .routes.v2 import PREFIX as V2_PREFIX
from .routes.v2 import VERSION
from .runtime import ServiceState
from .schemas import ErrorResponse
from .settings import Settings
from .tasks import served

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_ERROR = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
_V2_ERROR = {"$ref": "#/components/schemas/V2Error"}
_LIVE_PROBES = ("/health/live", f"{V2_PREFIX}/health/live")  # their 503 has no Retry-After


def _operations(schema: dict[str, Any]):
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield path, item[method]


def _find_parameter(operation: dict[str, Any], name: str) -> dict[str, Any] | None:
    for p in operation.get("parameters", []):
        if p["name"] == name:
            return p["schema"]
    return None


def _parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of a parameter the route declares (a KeyError if the route lost it)."""
    schema = _find_parameter(operation, name)
    if schema is None:
        raise KeyError(f"the operation {operation.get('operationId')} has no parameter {name!r}")
    return schema


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` -> X: a query parameter or header is absent, never null."""
    branches = schema.get("anyOf")
    if not branches or not any(b == {"type": "null"} for b in branches):
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def _errors(schema: dict[str, Any]) -> None:
    for path, operation in _operations(schema):
        responses = operation.get("responses", {})
        if path.startswith(V2_PREFIX):
            responses.pop("422", None)  # the v2 routes answer a bad parameter 400 (V2Route)
        elif "422" in responses:
            responses["422"]["content"] = {"application/json": {"schema": _ERROR}}
        if "503" in responses and path not in _LIVE_PROBES:
            responses["503"].setdefault("headers", RETRY_AFTER)
        for p in operation.get("parameters", []):
            p["schema"] = _without_null(p["schema"])
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" in components and "HTTPValidationError" not in str(schema["paths"]):
        components.pop("HTTPValidationError")
        components.pop("ValidationError", None)


def _bounds(schema: dict[str, Any], settings: Settings, service: ServiceState) -> None:
    paths = schema["paths"]
    for path in ("/classify", "/detect"):
        if path in paths:
            form = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            form["properties"]["files"]["maxItems"] = settings.max_images_per_request
    if service.detector is None:
        paths.pop("/detect", None)  # it answers 404: there is no such route on this server
    if not service.ready:
        return
    classifier = service.classifier
    classify = paths["/classify"]["post"]
    _parameter(classify, "top_k")["maximum"] = len(classifier.meta.labels)
    if not (settings.allow_points and classifier.backend.supports_points):
        points = _parameter(classify, "points")
        points["enum"] = [False]
        points["description"] = "always false here: " + (
            "points are disabled on this server"
            if not settings.allow_points
            else f"the {classifier.backend.name} backend cannot give them"
        )
    if service.detector is not None:
        meta = service.detector.meta
        detect = paths["/detect"]["post"]
        _parameter(detect, "max_detections")["maximum"] = meta.max_detections
        formats = served(meta.task).mask_formats
        if formats == ("none",):
            masks = _parameter(detect, "masks")
            masks["enum"] = list(formats)
            masks["description"] = f"always none here: {meta.name} is a {meta.task} model, without masks"
    names = [runtime.meta.name for runtime in service.runtimes]
    for path, operation in _operations(schema):
        if path.startswith(f"{V2_PREFIX}/models/"):
            _parameter(operation, "model_name")["enum"] = names
            version = _find_parameter(operation, "model_version")
            if version is not None:
                version["enum"] = [VERSION]


def _declare_auth(schema: dict[str, Any], open_paths: frozenset[str]) -> None:
    """With keys set: the bearer scheme, and on every route that needs a key its 401."""
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operation in _operations(schema):
        if path in open_paths:
            continue
        operation["security"] = [{"bearer": []}]
        operation.setdefault("responses", {})["401"] = {
            "description": "no API key, or not a valid one",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": _V2_ERROR if path.startswith(V2_PREFIX) else _ERROR}},
        }


def install_openapi(app: FastAPI, settings: Settings, open_paths: frozenset[str]) -> None:
    """Replaces ``app.openapi`` with the finished document."""
    service: ServiceState = app.state.service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _errors(schema)
        _bounds(schema, settings, service)
        if settings.api_key_list:
            _declare_auth(schema, open_paths)
        if service.ready:  # the models' bounds are in: keep it
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

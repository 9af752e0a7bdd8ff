"""The OpenAPI document tells the truth: what a route accepts (no parameter a request cannot
send, the bounds of the models it serves, a body that holds an image) and every status it can
answer, with its error schema. ``test_schemathesis`` then tries the document on a server."""

from __future__ import annotations

import pytest

from service import create_app
from tests.helpers.app import serve, settings
from tests.helpers.backends import FixedDetector

pytestmark = pytest.mark.anyio

ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
V2_ERROR = {"$ref": "#/components/schemas/V2Error"}
METHODS = ("get", "post")


async def document(backend, detector=None, **overrides) -> dict:
    app = create_app(settings(**overrides), backend=backend, detector=detector)
    async with serve(app) as client:
        return (await client.get("/openapi.json")).json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def parameter(operation: dict, name: str) -> dict:
    (found,) = [p for p in operation["parameters"] if p["name"] == name]
    return found["schema"]


async def test_no_parameter_offers_null_a_request_cannot_send(backend):
    schema = await document(backend, FixedDetector())
    for path, method, operation in operations(schema):
        for p in operation.get("parameters", []):
            assert "null" not in str(p["schema"]), (path, method, p)  # a header or query is text
    classify = schema["paths"]["/classify"]["post"]
    assert parameter(classify, "x-timeout-ms") == {
        "type": "integer",
        "minimum": 1,
        "title": "X-Timeout-Ms",
        "description": "same as timeout_ms",
    }
    assert parameter(classify, "timeout_ms")["type"] == "integer"


async def test_the_image_body_must_hold_images_and_nothing_else(backend):
    schema = await document(backend, FixedDetector(), max_images_per_request=4, max_batch_size=8)
    for path in ("/classify", "/detect"):
        body = schema["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        form = body["content"]["multipart/form-data"]["schema"]
        assert form["additionalProperties"] is False  # other fields are refused (422)
        assert form["minProperties"] == 1 and form["maxProperties"] == 1  # file or files
        assert form["properties"]["files"]["minItems"] == 1
        assert form["properties"]["files"]["maxItems"] == 4
        assert set(body["content"]) == {"multipart/form-data", "image/*", "application/octet-stream"}


async def test_points_are_offered_only_where_the_backend_gives_them(backend, tiny_model):
    given = parameter((await document(backend))["paths"]["/classify"]["post"], "points")
    assert given["type"] == "boolean" and "enum" not in given
    disabled = parameter(
        (await document(backend, allow_points=False))["paths"]["/classify"]["post"], "points"
    )
    assert disabled["enum"] == [False]
    from tests.helpers.backends import CountingBackend

    pointless = CountingBackend(tiny_model)
    pointless.supports_points = False  # as ONNX Runtime and TensorRT
    refused = parameter((await document(pointless))["paths"]["/classify"]["post"], "points")
    assert refused["enum"] == [False]


async def test_bounds_follow_the_served_models(backend):
    schema = await document(backend, FixedDetector())
    assert parameter(schema["paths"]["/classify"]["post"], "top_k")["maximum"] == 10  # labels
    assert parameter(schema["paths"]["/detect"]["post"], "max_detections")["maximum"] == 100
    for path in ("/v2/models/{model_name}", "/v2/models/{model_name}/infer"):
        operation = schema["paths"][path]["get" if path.endswith("}") else "post"]
        assert parameter(operation, "model_name")["enum"] == ["dat", "fixed_detector"]
    versioned = schema["paths"]["/v2/models/{model_name}/versions/{model_version}/infer"]["post"]
    assert parameter(versioned, "model_version")["enum"] == ["1"]
    assert "/detect" not in (await document(backend))["paths"]  # --detector none: no such route


async def test_every_status_a_route_answers_is_declared_with_its_error_schema(backend):
    schema = await document(backend, FixedDetector())
    paths = schema["paths"]
    expected = {
        ("/classify", "post"): {"200", "400", "408", "413", "415", "422", "500", "503", "504"},
        ("/detect", "post"): {"200", "400", "408", "413", "415", "422", "500", "503", "504"},
        ("/models", "get"): {"200"},
        ("/v2/models/{model_name}/infer", "post"): {
            "200",
            "400",
            "404",
            "408",
            "413",
            "415",
            "500",
            "503",
            "504",
        },
        ("/v2/models/{model_name}", "get"): {"200", "404", "503"},
        ("/v2/models/{model_name}/ready", "get"): {"200", "404", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (path, sorted(responses))
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                body = response["content"]["application/json"]["schema"]
                if path.startswith("/v2") and path.endswith("/ready") and status == "503":
                    assert body["anyOf"] == [{"$ref": "#/components/schemas/V2ModelReady"}, V2_ERROR]
                else:
                    assert body == (V2_ERROR if path.startswith("/v2") else ERROR), (path, status)
        if "503" in responses:
            assert "Retry-After" in responses["503"]["headers"], path
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's 422, not ours

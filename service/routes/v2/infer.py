"""The v2 inference routes: one request's body read within its deadline, its input batched with
every other request's, its outputs encoded as JSON or binary tensors."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Header, Request, Response

from runtimes.manifest import INPUT_NAME

from ... import v2protocol as v2
from ...errors import InferenceFailed, RequestTimeout, UnsupportedMediaType
from ...runtime import ServiceState
from ...schemas import V2InferResponse
from ...tasks import served
from ...uploads import read_body
from ..deps import Service, client_gone
from .api import BYTES_INPUT, ERRORS, VERSION, v2_router
from .catalog import find
from .inputs import model_input
from .outputs import requested_outputs, response_output

router = v2_router()

# the request body, which the route reads itself (JSON or binary tensors)
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "enum": [INPUT_NAME, BYTES_INPUT]},
        "datatype": {"type": "string", "enum": ["FP32", "FP16", v2.BYTES]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "row-major values; their count is the shape's product"},
        "parameters": {
            "type": "object",
            "description": "binary_data_size: the tensor's bytes after the JSON header instead of 'data'",
        },
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "An inference request: a JSON object, or with the binary tensor extension "
        "a JSON header of Inference-Header-Content-Length bytes followed by the "
        "tensors' raw bytes. Exactly one input; its data must fill its shape.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "description": "binary_data_output (bool), timeout (microseconds)",
                        },
                        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1, "maxItems": 1},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


TimeoutHeader = Annotated[
    int | None,
    Header(ge=1, description="deadline for this request in ms; can only shorten the server's default"),
]


@router.post(
    "/models/{model_name}/infer",
    response_model=V2InferResponse,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
    summary="Inference (JSON or binary tensors), batched",
)
async def infer(
    request: Request, service: Service, model_name: str, x_timeout_ms: TimeoutHeader = None
) -> Response:
    return await _infer(request, service, model_name, None, x_timeout_ms)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=V2InferResponse,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
    summary="Inference on one model version",
)
async def infer_version(
    request: Request,
    service: Service,
    model_name: str,
    model_version: str,
    x_timeout_ms: TimeoutHeader = None,
) -> Response:
    return await _infer(request, service, model_name, model_version, x_timeout_ms)


async def _infer(
    request: Request,
    service: ServiceState,
    model_name: str,
    model_version: str | None,
    x_timeout_ms: int | None,
) -> Response:
    started = time.monotonic()
    runtime = find(service, model_name, model_version)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding} is not supported; send the body uncompressed"
        )
    settings = service.settings
    service.check_admission(runtime)  # refused now, the body is not worth reading
    meta = runtime.meta
    timeout = min(t for t in (settings.default_timeout_ms, x_timeout_ms) if t) / 1000
    try:
        async with asyncio.timeout(timeout):
            with service.reading() as budget:
                body = await read_body(request, settings.max_body_bytes, budget)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout * 1000:.0f} ms") from None
    async with service.admit(runtime):  # a complete request only: see routes.images.compute
        json_size = v2.header_length(request.headers.get(v2.HEADER_LENGTH), len(body))
        # off the event loop: parsing a batch of JSON tensors would stall every other request
        parsed = await service.offload(v2.parse_request, body, json_size)
        if parsed.timeout_us:
            timeout = min(timeout, parsed.timeout_us / 1e6)
        outputs = requested_outputs(runtime, parsed)
        inputs = await model_input(service, runtime, parsed)
        request_id = request.state.request_id
        work = service.submit_tensor(runtime, inputs, started + timeout, False, request_id)
        results = await runtime.batcher.result(work, client_gone(request.receive))

    tensors = served(runtime.task).v2_tensors(meta, results)
    request.state.log = {"images": len(results), "batch_size": work.batch_size}
    try:
        content, header = v2.encode_response(
            meta.name, VERSION, parsed.id, [response_output(o, tensors, meta.labels) for o in outputs]
        )
    except ValueError as exc:
        raise InferenceFailed(str(exc)) from None
    if header is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={v2.HEADER_LENGTH: str(header)})

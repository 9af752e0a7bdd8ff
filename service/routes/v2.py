"""The Open Inference Protocol v2 REST API, as Triton and KServe serve it (tritonclient works).

Served models are the runtimes' models, looked up by name. A model takes one input,
``images`` (FP32 or FP16, [N, 3, S, S], preprocessed as the model's config says) or
``image_bytes`` (BYTES [N]: encoded images, decoded and preprocessed as /classify does). A
classifier answers ``logits`` (FP32 [N, classes]), or Triton's classification strings on
request; a detector answers its exported graph's tensors, ``boxes`` (FP32 [N, M, 4], x1 y1 x2
y2 on the model's canvas), ``scores`` (FP32 [N, M]) and ``labels`` (INT64 [N, M], -1 in the
empty slots), so a client reads the same tensors from Triton serving the exported detector.
An instance segmentation model (mmdet's Mask R-CNN) also answers ``masks`` (FP32 [N, M, 28,
28]: each detection's mask probabilities over its box); it takes ``images`` of any size
[N, 3, H, W] (H, W multiples of its divisor, each taken as already resized, boxes in its
pixels) or ``image_bytes`` (resized keeping the ratio, boxes in the original image's pixels).
Requests share the batcher, limits, deadlines and metrics of /classify. Errors are the
protocol's ``{"error": "message"}``; the wire format lives in :mod:`service.v2protocol`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from export import triton
from models.transforms import ImageMeta, KeepRatioResize, expect_pipeline
from runtimes.manifest import INPUT_NAME

from .. import v2protocol as v2
from ..backends.base import ImageBatch, KeepRatioInput
from ..errors import (
    BadRequest,
    InferenceFailed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unavailable,
    UnsupportedMediaType,
)
from ..preprocess import keep_ratio_inputs, stack
from ..runtime import ModelRuntime, ServiceState
from ..schemas import (
    V2Error,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
)
from ..uploads import Upload, read_body
from .deps import Service, client_gone
from .images import RETRY_AFTER

PREFIX = "/v2"
BYTES_INPUT = "image_bytes"
VERSION = triton.VERSION  # the one version served, as in the Triton repositories we write
EXTENSIONS = ["binary_tensor_data", "classification"]
# Triton's platform names, by our backend's name
PLATFORMS = {"torch": "pytorch_libtorch", **{name: p for name, (p, _) in triton.PLATFORMS.items()}}


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


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(v2.error_body(message), status_code=status, headers=headers)


router = APIRouter(prefix=PREFIX, tags=["open inference protocol (v2)"], route_class=V2Route)
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


# -- models --------------------------------------------------------------------------------


def _find(service: ServiceState, name: str, version: str | None) -> ModelRuntime:
    for runtime in service.runtimes:
        meta = runtime.backend.meta
        if meta is not None and meta.name == name:
            break
    else:
        if any(runtime.backend.meta is None for runtime in service.runtimes):
            raise Unavailable(
                "the models are still loading" if service.failure is None else "the model failed to load"
            )
        served = ", ".join(repr(r.meta.name) for r in service.runtimes)
        raise NotFound(f"unknown model {name!r}; this server serves {served}")
    if version is not None and version != VERSION:
        raise NotFound(f"model {name!r} has no version {version!r}; versions: {VERSION}")
    return runtime


def _inputs(runtime: ModelRuntime) -> list[v2.TensorSpec]:
    size = runtime.meta.input_size or -1  # -1: a keep-ratio detector takes any padded size
    return [
        v2.TensorSpec(INPUT_NAME, "FP32", (-1, 3, size, size)),
        v2.TensorSpec(BYTES_INPUT, v2.BYTES, (-1,)),
    ]


_DATATYPES = {"float32": "FP32", "int64": "INT64"}


def _outputs(runtime: ModelRuntime) -> list[v2.TensorSpec]:
    """The model's task's outputs, with the batch axis first."""
    meta = runtime.meta
    return [
        v2.TensorSpec(o.name, _DATATYPES[o.dtype], (-1, *o.resolve(len(meta.labels), meta.max_detections)))
        for o in meta.task.outputs
    ]


# -- health and metadata -------------------------------------------------------------------


@router.get("", response_model=V2ServerMetadata, summary="Server metadata and extensions")
async def server_metadata(request: Request) -> V2ServerMetadata:
    return V2ServerMetadata(name="dat-serve", version=request.app.version, extensions=EXTENSIONS)


@router.get(
    "/health/live",
    response_model=V2Live,
    responses={503: {"model": V2Live}},
    summary="200 while the process runs; 503 as /health/live (an inference thread dead or stuck)",
)
async def live(service: Service) -> JSONResponse:
    problem = service.liveness_problem()
    if problem is None:
        return JSONResponse({"live": True})
    return JSONResponse({"live": False, "reason": problem[1]}, status_code=503)


@router.get(
    "/health/ready",
    response_model=V2Ready,
    responses={503: {"model": V2Ready}},
    summary="200 once every model is loaded and warmed up; 503 before, while draining and "
    "while a model's batches keep failing",
)
async def ready(service: Service) -> JSONResponse:
    problem = service.not_ready()
    if problem is None:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": problem[1]}, status_code=503, headers={"Retry-After": "1"})


def _metadata(service: ServiceState, name: str, version: str | None) -> V2ModelMetadata:
    runtime = _find(service, name, version)
    return V2ModelMetadata(
        name=runtime.meta.name,
        versions=[VERSION],
        platform=PLATFORMS.get(runtime.backend.name, runtime.backend.name),
        inputs=[t.to_dict() for t in _inputs(runtime)],
        outputs=[t.to_dict() for t in _outputs(runtime)],
    )


@router.get(
    "/models/{model_name}",
    response_model=V2ModelMetadata,
    responses=MODEL_ERRORS,
    summary="Model metadata: versions, platform, input and output tensors",
)
async def model_metadata(service: Service, model_name: str) -> V2ModelMetadata:
    return _metadata(service, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=V2ModelMetadata,
    responses=MODEL_ERRORS,
    summary="Model metadata of one version",
)
async def model_version_metadata(service: Service, model_name: str, model_version: str) -> V2ModelMetadata:
    return _metadata(service, model_name, model_version)


def _ready(service: ServiceState, name: str, version: str | None) -> JSONResponse:
    runtime = _find(service, name, version)
    problem = service.not_ready(runtime)
    if problem is None:
        return JSONResponse({"name": runtime.meta.name, "ready": True})
    return JSONResponse(
        {"name": runtime.meta.name, "ready": False, "reason": problem[1]},
        status_code=503,
        headers={"Retry-After": "1"},
    )


@router.get(
    "/models/{model_name}/ready",
    response_model=V2ModelReady,
    responses=READY_ERRORS,
    summary="200 when the model can take requests; 503 while loading, draining or while its "
    "batches keep failing",
)
async def model_ready(service: Service, model_name: str) -> JSONResponse:
    return _ready(service, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_model=V2ModelReady,
    responses=READY_ERRORS,
    summary="Readiness of one model version",
)
async def model_version_ready(service: Service, model_name: str, model_version: str) -> JSONResponse:
    return _ready(service, model_name, model_version)


# -- inference -----------------------------------------------------------------------------


async def _model_input(service: ServiceState, runtime: ModelRuntime, request: v2.InferRequest) -> ImageBatch:
    """The request's one input as the batch the backend takes: float32 (N, 3, S, S), or a
    keep-ratio detector's list of images."""
    names = f"{INPUT_NAME!r} (FP32 or FP16) or {BYTES_INPUT!r} (BYTES, encoded images)"
    if len(request.inputs) != 1:
        raise BadRequest(f"send exactly one input: {names}")
    (tensor,) = request.inputs
    limit = service.settings.max_images_per_request
    size = runtime.meta.input_size
    if tensor.name == INPUT_NAME:
        if tensor.datatype not in v2.NUMERIC:
            raise BadRequest(
                f"input {INPUT_NAME!r} must be FP32 or FP16, got {tensor.datatype}"
                f" (encoded images go in {BYTES_INPUT!r} as BYTES)"
            )
        if runtime.meta.keeps_ratio:
            return await _resized_images(service, runtime, tensor)
        if len(tensor.shape) != 4 or tensor.shape[1:] != (3, size, size) or tensor.shape[0] < 1:
            raise BadRequest(
                f"input {INPUT_NAME!r} must have shape [N, 3, {size}, {size}] with "
                f"N >= 1, got {list(tensor.shape)}"
            )
        _check_images(tensor.shape[0], limit)
        return torch.from_numpy(await service.offload(v2.numeric_tensor, tensor))
    if tensor.name == BYTES_INPUT:
        if tensor.datatype != v2.BYTES:
            raise BadRequest(f"input {BYTES_INPUT!r} must be BYTES, got {tensor.datatype}")
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ((), (1,)) or tensor.shape[0] < 1:
            raise BadRequest(
                f"input {BYTES_INPUT!r} must have shape [N] (or [N, 1]) with N >= 1, got {list(tensor.shape)}"
            )
        _check_images(tensor.shape[0], limit)
        uploads = [Upload(data) for data in v2.bytes_elements(tensor)]
        try:
            decoded = await service.preprocess(runtime, uploads)
        except ServiceError as exc:
            exc.message = f"input {BYTES_INPUT!r}: {exc.message}"
            raise
        if runtime.meta.keeps_ratio:
            return keep_ratio_inputs(decoded, expect_pipeline(runtime.meta.preprocessing, KeepRatioResize))
        return stack(decoded)
    raise BadRequest(f"unknown input {tensor.name!r}: model {runtime.meta.name!r} takes {names}")


async def _resized_images(
    service: ServiceState, runtime: ModelRuntime, tensor: v2.RequestInput
) -> list[KeepRatioInput]:
    """A keep-ratio detector's ``images``: [N, 3, H, W], already resized and padded to the
    model's divisor, each image filling the whole input (boxes come back in its pixels)."""
    divisor = expect_pipeline(runtime.meta.preprocessing, KeepRatioResize).size_divisor
    shape = tuple(tensor.shape)
    if (
        len(shape) != 4
        or shape[1] != 3
        or shape[0] < 1
        or min(shape[2:]) < 1
        or any(s % divisor for s in shape[2:])
    ):
        raise BadRequest(
            f"input {INPUT_NAME!r} must have shape [N, 3, H, W] with N >= 1 and H, W multiples "
            f"of {divisor}, got {list(shape)}"
        )
    largest = runtime.meta.max_side
    if largest is not None and max(shape[2:]) > largest:
        raise BadRequest(
            f"input {INPUT_NAME!r} of {shape[2]} x {shape[3]} does not fit the exported graph's "
            f"{largest} x {largest} canvas"
        )
    _check_images(shape[0], service.settings.max_images_per_request)
    _check_pixels(shape[2] * shape[3], service.settings.max_image_pixels)
    images = torch.from_numpy(await service.offload(v2.numeric_tensor, tensor))
    meta = ImageMeta(shape[2:], shape[2:], (1.0, 1.0, 1.0, 1.0))
    return [(image, meta) for image in images]


def _check_pixels(pixels: int, limit: int) -> None:
    if pixels > limit:
        raise PayloadTooLarge(f"input images of {pixels:,} pixels exceed the limit of {limit:,} pixels")


def _check_images(images: int, limit: int) -> None:
    if images > limit:
        raise PayloadTooLarge(f"{images} images in one request; the limit is {limit}")


def _requested(runtime: ModelRuntime, request: v2.InferRequest) -> list[v2.RequestedOutput]:
    known = {t.name for t in _outputs(runtime)}
    if not request.outputs:
        return [v2.RequestedOutput(name, request.binary_output) for name in sorted(known)]
    for output in request.outputs:
        if output.name not in known:
            raise BadRequest(
                f"unknown output {output.name!r}; model {runtime.meta.name!r} has "
                f"{', '.join(repr(n) for n in sorted(known))}"
            )
        if output.classification and output.name not in runtime.task.labelled_outputs:
            raise BadRequest(
                f"the classification parameter applies to a classifier's logits; "
                f"{runtime.meta.name!r} is a {runtime.task} model"
            )
    return request.outputs


def _tensors(runtime: ModelRuntime, results: list) -> dict[str, np.ndarray]:
    """The batch's outputs as the graph's tensors (each per-image output holds its task's
    outputs by name): logits, or a detector's detections padded to the model's count."""
    meta = runtime.meta
    tensors = {}
    for o in meta.task.outputs:
        shape = o.resolve(len(meta.labels), meta.max_detections)
        tensor = np.full((len(results), *shape), o.fill, o.dtype)
        for i, r in enumerate(results):
            value = getattr(r, o.name)
            tensor[i, : len(value)] = value
        tensors[o.name] = tensor
    return tensors


def _response_output(
    output: v2.RequestedOutput, tensors: dict[str, np.ndarray], labels: tuple[str, ...]
) -> v2.ResponseOutput:
    values = tensors[output.name]
    if output.classification:
        elements = v2.classification(values, output.classification, labels)
        shape = (values.shape[0], len(elements) // max(1, values.shape[0]))
        return v2.ResponseOutput(output.name, v2.BYTES, shape, elements, output.binary)
    datatype = "INT64" if values.dtype == np.int64 else "FP32"
    return v2.ResponseOutput(output.name, datatype, values.shape, values, output.binary)


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
    runtime = _find(service, model_name, model_version)
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
        outputs = _requested(runtime, parsed)
        inputs = await _model_input(service, runtime, parsed)
        request_id = request.state.request_id
        work = service.submit_tensor(runtime, inputs, started + timeout, False, request_id)
        results = await runtime.batcher.result(work, client_gone(request.receive))

    tensors = _tensors(runtime, results)
    request.state.log = {"images": len(results), "batch_size": work.batch_size}
    try:
        content, header = v2.encode_response(
            meta.name, VERSION, parsed.id, [_response_output(o, tensors, meta.labels) for o in outputs]
        )
    except ValueError as exc:
        raise InferenceFailed(str(exc)) from None
    if header is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={v2.HEADER_LENGTH: str(header)})

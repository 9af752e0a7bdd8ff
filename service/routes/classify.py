"""POST /classify: one or several images -> top-k labels per image, batched with other requests."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from .. import postprocess
from ..errors import InvalidParameter, RequestTimeout
from ..schemas import ClassifyResponse, ErrorResponse, ImageResult, ModelRef, Timing
from ..uploads import read_images
from .deps import Service, client_gone

router = APIRouter(tags=["classification"])

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "Images as multipart/form-data parts named 'file' or 'files' (repeatable), "
                       "or one image as the raw body with an image/* content type. JPEG, PNG, GIF "
                       "(first frame), WebP, BMP, TIFF; EXIF orientation is honoured.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"},
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "undecodable, truncated or empty image; malformed body",
    408: "the body did not arrive before the deadline",
    413: "body, images per request or pixels per image over the limit",
    415: "unsupported content type",
    422: "bad parameters",
    503: "not ready, shutting down or overloaded (with Retry-After)",
    504: "the deadline passed; the request was not computed",
}.items()}


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, openapi_extra=IMAGE_BODY,
             summary="Classify one or several images")
async def classify(
    request: Request,
    service: Service,
    top_k: Annotated[int, Query(ge=1, le=1000, description="labels returned per image")] = 5,
    points: Annotated[bool, Query(description="also return the sampling points of the "
                                              "deformable (D) blocks")] = False,
    timeout_ms: Annotated[int | None, Query(ge=1, description="deadline for this request; "
                                            "can only shorten the server's default")] = None,
    x_timeout_ms: Annotated[int | None, Header(ge=1, description="same as timeout_ms")] = None,
) -> Response:
    started = time.monotonic()
    settings = service.settings
    runtime = service.classifier
    async with service.admit(runtime):
        meta = runtime.meta
        if top_k > len(meta.labels):
            raise InvalidParameter(f"top_k must be between 1 and {len(meta.labels)} (the model's "
                                   f"number of labels), got {top_k}")
        if points and not (settings.allow_points and runtime.backend.supports_points):
            raise InvalidParameter(f"points are not available with the {runtime.backend.name} backend"
                                   if settings.allow_points else "points are disabled on this server")
        timeout = min(t for t in (settings.default_timeout_ms, timeout_ms, x_timeout_ms) if t) / 1000
        deadline = started + timeout
        try:
            async with asyncio.timeout(timeout):
                uploads = await read_images(request, max_body_bytes=settings.max_body_bytes,
                                            max_images=settings.max_images_per_request)
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {timeout * 1000:.0f} ms") from None
        decoded = await service.preprocess(runtime, uploads)
        preprocessed = time.monotonic()
        request_id = request.state.request_id
        work = service.submit(runtime, decoded, deadline, points, request_id)
        outputs = await runtime.batcher.result(work, client_gone(request.receive))

    results = []
    for i, (upload, image, output) in enumerate(zip(uploads, decoded, outputs, strict=True)):
        predictions, image_points = postprocess.classify(output, meta.labels, top_k, points)
        results.append(ImageResult(index=i, filename=upload.filename, width=image.width,
                                   height=image.height, predictions=predictions, points=image_points))
    total = time.monotonic() - started
    request.state.log = {"images": len(results), "batch_size": work.batch_size}
    body = ClassifyResponse(
        model=ModelRef(name=meta.name, version=meta.version, backend=runtime.backend.name,
                       precision=runtime.backend.precision),
        results=results,
        timing=Timing(preprocess_ms=_ms(preprocessed - started), queue_ms=_ms(work.queue_s),
                      inference_ms=_ms(work.inference_s), total_ms=_ms(total),
                      batch_size=work.batch_size),
        request_id=request_id)
    # Serialised once here; returning the model would make FastAPI validate it a second time.
    return Response(body.model_dump_json(), media_type="application/json")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)

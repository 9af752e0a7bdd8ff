"""What /classify and /detect share: the image request body, error responses, and the path
from admission to the batch's outputs (limits, deadline, decoding, batching, disconnects)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ..backends import ModelMeta
from ..batch_queue import QueuedWork
from ..errors import RequestTimeout
from ..preprocess import Decoded
from ..runtime import ModelRuntime, ServiceState
from ..schemas import ErrorResponse, ModelRef, Timing
from ..uploads import Upload, read_images
from .deps import client_gone

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "Images as multipart/form-data parts named 'file' or 'files' (repeatable), "
        "or one image as the raw body with an image/* content type. JPEG, PNG, GIF "
        "(first frame), WebP, BMP, TIFF; EXIF orientation is honoured.",
        "content": {
            # one of the two fields (the server also takes both, and repeated 'file' parts, up to
            # max_images_per_request in all); any other field is refused (422)
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "files": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                        },
                    },
                },
                "encoding": {
                    "file": {"contentType": "image/*, application/octet-stream"},
                    "files": {"contentType": "image/*, application/octet-stream"},
                },
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "undecodable, truncated or empty image; malformed body",
        408: "the body did not arrive before the deadline",
        413: "body, images per request or pixels per image over the limit",
        415: "unsupported content type",
        422: "bad parameters",
        500: "the batch that held the request failed",
        503: "not ready, shutting down or overloaded (with Retry-After)",
        504: "the deadline passed; the request was not computed",
    }.items()
}
ERRORS[503]["headers"] = RETRY_AFTER


@dataclass
class Computed:
    """A request's images, decoded, and the outputs of the batch that ran them."""

    meta: ModelMeta
    uploads: list[Upload]
    decoded: list[Decoded]
    outputs: Sequence[Any]
    work: QueuedWork
    started: float
    preprocessed: float
    deadline: float  # time.monotonic() after which the response is no longer worth computing

    def timing(self) -> Timing:
        return Timing(
            preprocess_ms=_ms(self.preprocessed - self.started),
            queue_ms=_ms(self.work.queue_s),
            inference_ms=_ms(self.work.inference_s),
            total_ms=_ms(time.monotonic() - self.started),
            batch_size=self.work.batch_size,
        )


def model_ref(runtime: ModelRuntime, meta: ModelMeta) -> ModelRef:
    return ModelRef(
        name=meta.name,
        version=meta.version,
        backend=runtime.backend.name,
        precision=runtime.backend.precision,
    )


async def compute(
    request: Request,
    service: ServiceState,
    runtime: ModelRuntime,
    *,
    timeout_ms: int | None,
    x_timeout_ms: int | None,
    want_points: bool = False,
    check: Callable[[ModelMeta], None] | None = None,
) -> Computed:
    """``check`` (parameter checks that need the loaded model), the body within the deadline
    on the reading budget, then admission to compute, decoding on the pool, and the batch.
    Raises the service's errors."""
    started = time.monotonic()
    settings = service.settings
    service.check_admission(runtime)  # refused now, the body is not worth reading
    meta = runtime.meta
    if check is not None:
        check(meta)
    timeout = min(t for t in (settings.default_timeout_ms, timeout_ms, x_timeout_ms) if t) / 1000
    deadline = started + timeout
    try:
        async with asyncio.timeout(timeout):
            with service.reading() as budget:
                uploads = await read_images(
                    request,
                    max_body_bytes=settings.max_body_bytes,
                    max_images=settings.max_images_per_request,
                    budget=budget,
                )
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout * 1000:.0f} ms") from None
    # only a complete request takes an inference slot: a slow client cannot hold one
    async with service.admit(runtime):
        decoded = await service.preprocess(runtime, uploads)
        preprocessed = time.monotonic()
        work = service.submit(runtime, decoded, deadline, want_points, request.state.request_id)
        outputs = await runtime.batcher.result(work, client_gone(request.receive))
    return Computed(meta, uploads, decoded, outputs, work, started, preprocessed, deadline)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)

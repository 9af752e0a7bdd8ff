"""POST /detect: one or several images -> boxes with labels and scores (and, for an instance
segmentation model, masks), batched with other requests."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import TypeAdapter

from .. import postprocess
from ..backends import ModelMeta
from ..errors import DeadlineExceeded, InvalidParameter, NotFound, PayloadTooLarge
from ..masks import MaskFormat
from ..schemas import CocoDetection, DetectionResult, DetectResponse
from ..tasks import served
from .deps import Service
from .images import ERRORS, IMAGE_BODY, compute, model_ref

router = APIRouter(tags=["detection"])

DEFAULT_SCORE_THRESHOLD = 0.5  # class-aware NMS keeps second readings of an object, scoring lower
_COCO = TypeAdapter(list[CocoDetection])
# With --detector none the route answers 404 and leaves the OpenAPI document (service.openapi).
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "model": DetectResponse | list[CocoDetection],
        "description": "detections per image; with format=coco a JSON array in the COCO results format",
    },
}
RESPONSES[413] = {
    **RESPONSES[413],
    "description": RESPONSES[413]["description"]
    + "; the response over max_response_bytes; the masks over max_mask_pixels",
}
RESPONSES[504] = {
    **RESPONSES[504],
    "description": RESPONSES[504]["description"] + ", or its masks not all pasted in time",
}


@router.post(
    "/detect",
    response_model=None,
    responses=RESPONSES,
    openapi_extra=IMAGE_BODY,
    summary="Find objects in one or several images",
)
async def detect(
    request: Request,
    service: Service,
    score_threshold: Annotated[
        float,
        Query(
            ge=0.0,
            le=1.0,
            description="lowest score returned "
            "(the model itself keeps nothing under its own "
            "threshold, 0.05 for the release settings)",
        ),
    ] = DEFAULT_SCORE_THRESHOLD,
    max_detections: Annotated[
        int | None,
        Query(ge=1, description="most detections per image (default and upper bound: the model's, 100)"),
    ] = None,
    format: Annotated[
        Literal["json", "coco"],
        Query(
            description="coco: a flat array in the COCO "
            "results format (image_id = position in the "
            "request, bbox = x, y, w, h)"
        ),
    ] = "json",
    masks: Annotated[
        MaskFormat,
        Query(
            description="instance segmentation models: each detection's mask at the image's "
            "size in 'segmentation', as COCO compressed RLE (rle) or polygons (polygon); "
            "none leaves them out"
        ),
    ] = "none",
    timeout_ms: Annotated[
        int | None,
        Query(ge=1, description="deadline for this request; can only shorten the server's default"),
    ] = None,
    x_timeout_ms: Annotated[int | None, Header(ge=1, description="same as timeout_ms")] = None,
) -> Response:
    runtime = service.detector
    if runtime is None:
        raise NotFound("this server runs no detector (started with --detector none)")

    def check(meta: ModelMeta) -> None:
        if masks not in served(meta.task).mask_formats:
            raise InvalidParameter(
                f"masks={masks} needs an instance segmentation model; {meta.name} is a {meta.task} model"
            )
        limit = meta.max_detections
        if max_detections is not None and max_detections > limit:
            raise InvalidParameter(
                f"max_detections must be between 1 and {limit} (the model "
                f"keeps at most {limit} per image), got {max_detections}"
            )

    done = await compute(
        request, service, runtime, timeout_ms=timeout_ms, x_timeout_ms=x_timeout_ms, check=check
    )

    limit = max_detections or done.meta.max_detections
    images = list(zip(done.uploads, done.decoded, done.outputs, strict=True))
    with_masks, total = masks != "none", 0
    if with_masks:
        # pasting costs each detection its whole image's pixels: bounded before it starts
        counts = [
            postprocess.count_detections(output, done.meta, image.width, image.height, score_threshold, limit)
            for _, image, output in images
        ]
        total = sum(counts)
        pixels = sum(n * image.width * image.height for n, (_, image, _) in zip(counts, images))
        cap = service.settings.max_mask_pixels
        if pixels > cap:
            raise PayloadTooLarge(
                f"the masks of {total} detections would be {pixels:,} mask pixels (each at its "
                f"image's size), over the limit of {cap:,} (max_mask_pixels): ask for fewer "
                "detections (max_detections, score_threshold) or send smaller images"
            )
    pasted = 0

    def before_mask() -> None:
        """Stops the pasting once the deadline has passed: the rest is not computed."""
        nonlocal pasted
        if time.monotonic() > done.deadline:
            raise DeadlineExceeded(
                f"the deadline passed while pasting masks ({pasted} of {total} done): ask for "
                "fewer detections or smaller images, or allow more time (timeout_ms)"
            )
        pasted += 1

    def build_results() -> list[DetectionResult]:
        return [
            DetectionResult(
                index=i,
                filename=upload.filename,
                width=image.width,
                height=image.height,
                detections=postprocess.detect(
                    output,
                    done.meta,
                    image.width,
                    image.height,
                    score_threshold,
                    limit,
                    masks,
                    before_mask,
                ),
            )
            for i, (upload, image, output) in enumerate(images)
        ]

    # pasting and encoding masks is CPU work: on the pool, not the event loop
    results = await service.offload(build_results) if with_masks else build_results()
    request.state.log = {
        "images": len(results),
        "batch_size": done.work.batch_size,
        "detections": sum(len(r.detections) for r in results),
    }
    if format == "coco":
        body = _COCO.dump_json(postprocess.coco_results(results), exclude_none=True)
    else:
        body = (
            DetectResponse(
                model=model_ref(runtime, done.meta),
                results=results,
                timing=done.timing(),
                request_id=request.state.request_id,
            )
            .model_dump_json()
            .encode()
        )  # the limit counts bytes, as the coco branch's
    most = service.settings.max_response_bytes
    if len(body) > most:
        raise PayloadTooLarge(
            f"the response would be {len(body):,} bytes, over the limit of {most:,} "
            "(max_response_bytes): ask for fewer detections (max_detections, score_threshold), "
            "fewer images per request, or masks=rle rather than polygon"
        )
    return Response(body, media_type="application/json")

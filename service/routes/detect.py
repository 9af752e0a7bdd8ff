"""POST /detect: one or several images -> boxes with labels and scores (and, for an instance
segmentation model, masks), batched with other requests."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import TypeAdapter

from .. import postprocess
from ..backends import ModelMeta
from ..errors import InvalidParameter, NotFound, PayloadTooLarge
from ..masks import MaskFormat
from ..schemas import CocoDetection, DetectionResult, DetectResponse
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
    "description": RESPONSES[413]["description"] + "; the response over max_response_bytes",
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
        if masks != "none" and not meta.task.has_masks:
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
                    max_detections or done.meta.max_detections,
                    masks,
                ),
            )
            for i, (upload, image, output) in enumerate(
                zip(done.uploads, done.decoded, done.outputs, strict=True)
            )
        ]

    # pasting and encoding masks is CPU work: on the pool, not the event loop
    results = build_results() if masks == "none" else await service.offload(build_results)
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
    limit = service.settings.max_response_bytes
    if len(body) > limit:
        raise PayloadTooLarge(
            f"the response would be {len(body):,} bytes, over the limit of {limit:,} "
            "(max_response_bytes): ask for fewer detections (max_detections, score_threshold), "
            "fewer images per request, or masks=rle rather than polygon"
        )
    return Response(body, media_type="application/json")

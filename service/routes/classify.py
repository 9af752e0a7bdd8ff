"""POST /classify: one or several images -> top-k labels per image, batched with other requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from .. import postprocess
from ..backends import ModelMeta
from ..errors import InvalidParameter
from ..schemas import ClassifyResponse, ImageResult
from .deps import Service
from .images import ERRORS, IMAGE_BODY, compute, model_ref

router = APIRouter(tags=["classification"])


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=IMAGE_BODY,
    summary="Classify one or several images",
)
async def classify(
    request: Request,
    service: Service,
    top_k: Annotated[int, Query(ge=1, le=1000, description="labels returned per image")] = 5,
    points: Annotated[
        bool, Query(description="also return the sampling points of the deformable (D) blocks")
    ] = False,
    timeout_ms: Annotated[
        int | None,
        Query(ge=1, description="deadline for this request; can only shorten the server's default"),
    ] = None,
    x_timeout_ms: Annotated[int | None, Header(ge=1, description="same as timeout_ms")] = None,
) -> Response:
    settings = service.settings
    runtime = service.classifier

    def check(meta: ModelMeta) -> None:
        if top_k > len(meta.labels):
            raise InvalidParameter(
                f"top_k must be between 1 and {len(meta.labels)} (the model's number of labels), got {top_k}"
            )
        if points and not (settings.allow_points and runtime.backend.supports_points):
            raise InvalidParameter(
                f"points are not available with the {runtime.backend.name} backend"
                if settings.allow_points
                else "points are disabled on this server"
            )

    done = await compute(
        request,
        service,
        runtime,
        timeout_ms=timeout_ms,
        x_timeout_ms=x_timeout_ms,
        want_points=points,
        check=check,
    )
    results = []
    for i, (upload, image, output) in enumerate(zip(done.uploads, done.decoded, done.outputs, strict=True)):
        predictions, image_points = postprocess.classify(output, done.meta.labels, top_k, points)
        results.append(
            ImageResult(
                index=i,
                filename=upload.filename,
                width=image.width,
                height=image.height,
                predictions=predictions,
                points=image_points,
            )
        )
    request.state.log = {"images": len(results), "batch_size": done.work.batch_size}
    body = ClassifyResponse(
        model=model_ref(runtime, done.meta),
        results=results,
        timing=done.timing(),
        request_id=request.state.request_id,
    )
    # Serialised once here; returning the model would make FastAPI validate it a second time.
    return Response(body.model_dump_json(), media_type="application/json")

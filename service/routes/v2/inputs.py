"""A v2 request's one input as the batch a backend takes: checked against the model's input
shape and the server's limits, encoded images decoded and preprocessed as /classify does."""

from __future__ import annotations

import torch

from models.transforms import ImageMeta, KeepRatioResize, expect_pipeline
from runtimes.manifest import INPUT_NAME

from ... import v2protocol as v2
from ...backends.base import ImageBatch, KeepRatioInput
from ...errors import BadRequest, PayloadTooLarge, ServiceError
from ...preprocess import keep_ratio_inputs, stack
from ...runtime import ModelRuntime, ServiceState
from ...uploads import Upload
from .api import BYTES_INPUT


async def model_input(service: ServiceState, runtime: ModelRuntime, request: v2.InferRequest) -> ImageBatch:
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

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

What the routes share (prefix, version, error shape) is in ``api``; the routes in
``metadata`` (health, server and model metadata) and ``infer``, which reads its input through
``inputs`` and answers through ``outputs``; ``catalog`` finds the served model a path names.
"""

from fastapi import APIRouter

from . import infer, metadata
from .api import PREFIX, VERSION

router = APIRouter()  # each module's routes carry the prefix, tags and error shape
router.include_router(metadata.router)
router.include_router(infer.router)

__all__ = ["PREFIX", "VERSION", "router"]

"""The model's seams at export: the opaque custom ops that stand for them while a model is
traced, and which ONNX translation each op gets.

During export the two seams of :mod:`models.sampling` are swapped for the custom ops
``dat::sample_kv`` (deformable key/value sampling) and ``dat::interp_bias`` (relative position
bias interpolation), DAT++'s neighborhood attention (:mod:`models.neighborhood`) for
``dat::neighborhood_attention``, a detector's NMS for ``dat::nms_keep`` and its RoIAlign
(:mod:`models.roi_align`) for ``dat::roi_align``. ``torch.export``
keeps them as single opaque nodes, and the ONNX exporter translates each with one of our
functions (:func:`translation_table`): the samplings, NMS and RoIAlign in
:mod:`export.seam_translations` (a sampling as a ``native`` GridSample or ``decomposed`` into
Gather and arithmetic), neighborhood attention in :mod:`export.neighborhood_translation`.

Beside them while a model is traced: :class:`export.trace_policy.ExportPolicy` (how attention
and half-precision islands are written); after it, :func:`export.node_names.name_nodes`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from models import neighborhood, nms, roi_align, sampling

from .neighborhood_translation import neighborhood_attention_onnx
from .seam_translations import grid_sample_decomposed, grid_sample_native, nms_keep_onnx, roi_align_onnx

GRID_SAMPLE_MODES = ("native", "decomposed")
# Opsets at which a GridSample node may be emitted: 16 introduced it, 20 renamed its mode.
NATIVE_OPSETS = range(16, 20)
SEAM_OPS = {
    "sample_kv": "deformable_kv",
    "interp_bias": "bias_interpolation",
    "nms_keep": "nms",
    "neighborhood_attention": "neighborhood",
    "roi_align": "roi_align",
}


# --------------------------------------------------------------------------- custom ops


def _sampled_shape(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return source.new_empty((source.shape[0], source.shape[1], grid.shape[1], grid.shape[2]))


@torch.library.custom_op("dat::sample_kv", mutates_args=())
def sample_kv(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Seam ``deformable_kv`` as an opaque op: (N, C, H, W) at (N, Ho, Wo, 2) -> (N, C, Ho, Wo)."""
    return sampling.bilinear_grid_sample(source, grid)


@torch.library.custom_op("dat::interp_bias", mutates_args=())
def interp_bias(table: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Seam ``bias_interpolation`` as an opaque op; same contract as :func:`sample_kv`."""
    return sampling.bilinear_grid_sample(table, grid)


sample_kv.register_fake(_sampled_shape)
interp_bias.register_fake(_sampled_shape)


@torch.library.custom_op("dat::nms_keep", mutates_args=())
def nms_keep_op(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    max_per_class: int,
    iou_threshold: float,
    score_threshold: float,
) -> torch.Tensor:
    """The detector's NMS seam as an opaque op: (B, N, 4), (B, C, N) -> keep mask (B, C, N)."""
    return nms.greedy_nms_keep(boxes, scores, max_per_class, iou_threshold, score_threshold)


@nms_keep_op.register_fake
def _(boxes, scores, max_per_class, iou_threshold, score_threshold):
    return torch.empty_like(scores)


@torch.library.custom_op("dat::roi_align", mutates_args=())
def roi_align_op(
    features: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """The detector's RoIAlign seam as an opaque op: (B, C, H, W), (N, 4), (N,) -> (N, C, P, P)."""
    return roi_align.roi_align(
        features, boxes, batch_index, output_size, spatial_scale, sampling_ratio, aligned
    )


@roi_align_op.register_fake
def _(features, boxes, batch_index, output_size, spatial_scale, sampling_ratio, aligned):
    return features.new_empty((boxes.shape[0], features.shape[1], output_size, output_size))


@torch.library.custom_op("dat::neighborhood_attention", mutates_args=())
def neighborhood_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor, kernel: int, scale: float
) -> torch.Tensor:
    """The ``N`` blocks' seam as an opaque op: q, k, v (B, heads, H, W, d), rpb (heads, 2k-1,
    2k-1) -> (B, heads, H, W, d). Opaque also keeps the static layout tensors, which
    :func:`models.neighborhood.layout` caches, from being built (and cached) as fake tensors."""
    return neighborhood.blocked_neighborhood_attention(q, k, v, rpb, kernel, scale)


@neighborhood_attention_op.register_fake
def _(q, k, v, rpb, kernel, scale):
    return q.new_empty(q.shape)


@contextlib.contextmanager
def opaque_seams() -> Iterator[None]:
    """Routes the model's seams (both samplings, neighborhood attention, and a detector's NMS
    and RoIAlign) through the custom ops while a model is traced."""
    with (
        sampling.override(
            deformable_kv=torch.ops.dat.sample_kv, bias_interpolation=torch.ops.dat.interp_bias
        ),
        neighborhood.override(torch.ops.dat.neighborhood_attention),
        nms.override(torch.ops.dat.nms_keep),
        roi_align.override(torch.ops.dat.roi_align),
    ):
        yield


# --------------------------------------------------------------------------- ONNX translations


def translation_table(grid_sample: str, opset: int) -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: both seams in one mode."""
    if grid_sample not in GRID_SAMPLE_MODES:
        raise ValueError(f"grid-sample mode must be one of {GRID_SAMPLE_MODES}, got {grid_sample!r}")
    if grid_sample == "native" and opset not in NATIVE_OPSETS:
        raise ValueError(
            f"a native GridSample cannot be exported at opset {opset}: opset 20 renamed its mode "
            "to 'linear', which TensorRT reads as nearest; use --opset 18 or --grid-sample decomposed"
        )
    fn = grid_sample_native if grid_sample == "native" else grid_sample_decomposed
    return {
        torch.ops.dat.sample_kv.default: fn,
        torch.ops.dat.interp_bias.default: fn,
        torch.ops.dat.neighborhood_attention.default: neighborhood_attention_onnx,
        torch.ops.dat.nms_keep.default: nms_keep_onnx,
        torch.ops.dat.roi_align.default: roi_align_onnx,
    }

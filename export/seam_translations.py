"""The ONNX translations of the sampling, NMS and RoIAlign seams (see :mod:`export.symbolics`),
and the onnxscript helpers every translation shares.

The samplings, in either mode:

``native``
    one ``GridSample`` node per seam with pinned attributes: ``mode="bilinear"``,
    ``padding_mode="zeros"``, ``align_corners=1``. Only exported at opset 18-19: opset 20
    renamed the mode to ``linear``, which TensorRT's ONNX parser reads as nearest.
``decomposed``
    the same bilinear sampling written with ``Gather`` and arithmetic, no ``GridSample`` at
    all, for runtimes whose GridSample is missing or wrong.

Both compute in float32 whatever the input dtype (a half-precision grid misplaces samples by a
visible fraction of a pixel) and cast the result back to the input's dtype. NMS is ONNX
``NonMaxSuppression``, RoIAlign ONNX ``RoiAlign`` with pinned attributes (:func:`roi_align_onnx`).
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript import opset18 as op


def to_float(value):
    """``value`` as float32 (a Cast only where it is not already)."""
    return value if value.dtype == ir.DataType.FLOAT else op.Cast(value, to=ir.DataType.FLOAT)


def restore_dtype(result, like):
    """``result`` cast back to the dtype of ``like`` (none where that is float32 or unknown)."""
    return result if like.dtype in (None, ir.DataType.FLOAT) else op.Cast(result, to=like.dtype)


def static_dim(dim, what: str, where: str = "decomposed grid sampling") -> int:
    """A dimension the translation bakes into the graph; NotImplementedError where it is symbolic."""
    if not isinstance(dim, int):
        raise NotImplementedError(f"{where} needs a static {what}, got {dim!r}")
    return dim


def constant(value, dtype: ir.DataType | None = None):
    """A Constant node holding ``value`` (the dtype inferred where None)."""
    # onnxscript's opset signatures name onnx.TensorProto; it takes onnx_ir's tensors as well
    return op.Constant(value=ir.tensor(value, dtype=dtype))  # type: ignore[arg-type]


def grid_sample_native(source, grid):
    """One pinned ``GridSample`` (float32 inside, input dtype outside)."""
    result = op.GridSample(
        to_float(source), to_float(grid), mode="bilinear", padding_mode="zeros", align_corners=1
    )
    return restore_dtype(result, source)


def grid_sample_decomposed(source, grid):
    """Bilinear sampling, zeros padding, ``align_corners=True``, with Gather and arithmetic.

    Pixel coordinates are ``(g + 1) / 2 * (size - 1)``; each of the four neighbours is read
    from the (N*H*W, C) flattened source with one ``Gather`` and weighted by its bilinear
    weight, zeroed where the neighbour lies outside the map. Only the batch axis may be dynamic.
    """
    _, c, h, w = source.shape
    c, h, w = static_dim(c, "channel count"), static_dim(h, "height"), static_dim(w, "width")
    f32 = ir.DataType.FLOAT
    i64 = ir.DataType.INT64

    def const(value, dtype=f32):
        return constant(value, dtype)

    grid = to_float(grid)
    gx = op.Gather(grid, const(0, i64), axis=-1)  # (N, Ho, Wo)
    gy = op.Gather(grid, const(1, i64), axis=-1)
    px = op.Mul(op.Add(gx, const(1.0)), const((w - 1) / 2))
    py = op.Mul(op.Add(gy, const(1.0)), const((h - 1) / 2))
    x0, y0 = op.Floor(px), op.Floor(py)
    x1, y1 = op.Add(x0, const(1.0)), op.Add(y0, const(1.0))
    wx1, wy1 = op.Sub(px, x0), op.Sub(py, y0)
    wx0, wy0 = op.Sub(const(1.0), wx1), op.Sub(const(1.0), wy1)

    # (N*H*W, C) rows; image n starts at row n*H*W.
    rows = op.Reshape(op.Transpose(to_float(source), perm=[0, 2, 3, 1]), const([-1, c], i64))
    batch = op.Squeeze(op.Shape(source, start=0, end=1), const([0], i64))
    first_row = op.Mul(op.Range(const(0, i64), batch, const(1, i64)), const(h * w, i64))
    first_row = op.Reshape(first_row, const([-1, 1, 1], i64))  # (N, 1, 1)

    def corner(x, y, weight):
        inside = op.And(
            op.And(op.GreaterOrEqual(x, const(0.0)), op.LessOrEqual(x, const(w - 1.0))),
            op.And(op.GreaterOrEqual(y, const(0.0)), op.LessOrEqual(y, const(h - 1.0))),
        )
        xi = op.Cast(op.Clip(x, const(0.0), const(w - 1.0)), to=i64)
        yi = op.Cast(op.Clip(y, const(0.0), const(h - 1.0)), to=i64)
        index = op.Add(first_row, op.Add(op.Mul(yi, const(w, i64)), xi))  # (N, Ho, Wo)
        weight = op.Where(inside, weight, const(0.0))
        return op.Mul(op.Gather(rows, index, axis=0), op.Unsqueeze(weight, const([-1], i64)))

    total = op.Add(
        op.Add(corner(x0, y0, op.Mul(wx0, wy0)), corner(x1, y0, op.Mul(wx1, wy0))),
        op.Add(corner(x0, y1, op.Mul(wx0, wy1)), corner(x1, y1, op.Mul(wx1, wy1))),
    )
    return restore_dtype(op.Transpose(total, perm=[0, 3, 1, 2]), source)  # (N, C, Ho, Wo)


def nms_keep_onnx(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
    """ONNX ``NonMaxSuppression`` (corner boxes), its selected (batch, class, box) triples
    scattered as ones into a zero mask shaped like ``scores``."""
    f32, i64 = ir.DataType.FLOAT, ir.DataType.INT64
    selected = op.NonMaxSuppression(
        to_float(boxes),
        to_float(scores),
        constant([max_per_class], i64),
        constant([iou_threshold], f32),
        constant([score_threshold], f32),
        center_point_box=0,
    )
    count = op.Shape(selected, start=0, end=1)
    ones = op.Expand(constant(1.0, f32), count)
    # onnxscript's opset signatures name onnx.TensorProto (as in constant)
    zeros = op.ConstantOfShape(op.Shape(scores), value=ir.tensor([0.0], dtype=f32))  # type: ignore[arg-type]
    return restore_dtype(op.ScatterND(zeros, selected, ones), scores)


# mmcv's RoIAlign as ONNX RoiAlign (opset 16+) writes it: average pooling; "half_pixel" is
# mmcv's aligned=True (pixel centres at half-integers, no minimum RoI size), "output_half_pixel"
# its aligned=False (RoI sides at least 1).
ROI_ALIGN_MODE = "avg"
ROI_ALIGN_TRANSFORM = {True: "half_pixel", False: "output_half_pixel"}


def roi_align_onnx(
    features, boxes, batch_index, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool
):
    """One ``RoiAlign`` node with pinned attributes, float32 inside (ONNX Runtime's CPU kernel
    has no float16), the features' dtype outside. ``sampling_ratio`` 0 is adaptive in both
    (``ceil(roi side / P)`` samples per bin and RoI), and samples outside ``[-1, size]`` count
    as 0 in both: ONNX Runtime reproduces :func:`models.roi_align.roi_align` to float32 rounding."""
    pooled = op.RoiAlign(
        to_float(features),
        to_float(boxes),
        batch_index,  # int64: the extractor's arange
        mode=ROI_ALIGN_MODE,
        output_height=output_size,
        output_width=output_size,
        sampling_ratio=sampling_ratio,
        spatial_scale=spatial_scale,
        coordinate_transformation_mode=ROI_ALIGN_TRANSFORM[bool(aligned)],
    )
    return restore_dtype(pooled, features)

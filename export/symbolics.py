"""Our ONNX translations of the model's seams, and the export-time op policy.

During export the two seams of :mod:`models.sampling` are swapped for the custom ops
``dat::sample_kv`` (deformable key/value sampling) and ``dat::interp_bias`` (relative position
bias interpolation), DAT++'s neighborhood attention (:mod:`models.neighborhood`) for
``dat::neighborhood_attention``, a detector's NMS for ``dat::nms_keep`` and its RoIAlign
(:mod:`models.roi_align`) for ``dat::roi_align``. ``torch.export``
keeps them as single opaque nodes, and the ONNX exporter translates each with one of our
functions. The samplings, in either mode:

``native``
    one ``GridSample`` node per seam with pinned attributes: ``mode="bilinear"``,
    ``padding_mode="zeros"``, ``align_corners=1``. Only exported at opset 18-19: opset 20
    renamed the mode to ``linear``, which TensorRT's ONNX parser reads as nearest.
``decomposed``
    the same bilinear sampling written with ``Gather`` and arithmetic, no ``GridSample`` at
    all, for runtimes whose GridSample is missing or wrong.

Both compute in float32 whatever the input dtype (a half-precision grid misplaces samples by a
visible fraction of a pixel) and cast the result back to the input's dtype. Neighborhood
attention is written out exactly with Gather and MatMul over static window indices
(:func:`neighborhood_attention_onnx`), NMS as ONNX ``NonMaxSuppression`` and RoIAlign as
ONNX ``RoiAlign`` with pinned attributes (:func:`roi_align_onnx`).

:class:`ExportPolicy` is a ``TorchFunctionMode`` active while the model is traced. It writes
attention out as ``softmax((q * scale) @ k^T + bias) @ v`` (the ONNX exporter's handling of
``scaled_dot_product_attention`` breaks a dynamic batch axis; the explicit form exports to
plain MatMul/Softmax that every runtime fuses) and, for half-precision graphs, keeps the
softmax and every LayerNorm in float32.

:func:`name_nodes` renames the ONNX nodes after the module that produced them, e.g.
``stages.2.attns.1/deformable_kv/GridSample``, so a reader of the graph finds stage and block.
"""

from __future__ import annotations

import ast
import contextlib
from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from onnxscript import opset18 as op

from models import neighborhood, nms, roi_align, sampling

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


def _to_float(value):
    return value if value.dtype == ir.DataType.FLOAT else op.Cast(value, to=ir.DataType.FLOAT)


def _restore_dtype(result, like):
    return result if like.dtype in (None, ir.DataType.FLOAT) else op.Cast(result, to=like.dtype)


def grid_sample_native(source, grid):
    """One pinned ``GridSample`` (float32 inside, input dtype outside)."""
    result = op.GridSample(
        _to_float(source), _to_float(grid), mode="bilinear", padding_mode="zeros", align_corners=1
    )
    return _restore_dtype(result, source)


def _static(dim, what: str, where: str = "decomposed grid sampling") -> int:
    if not isinstance(dim, int):
        raise NotImplementedError(f"{where} needs a static {what}, got {dim!r}")
    return dim


def grid_sample_decomposed(source, grid):
    """Bilinear sampling, zeros padding, ``align_corners=True``, with Gather and arithmetic.

    Pixel coordinates are ``(g + 1) / 2 * (size - 1)``; each of the four neighbours is read
    from the (N*H*W, C) flattened source with one ``Gather`` and weighted by its bilinear
    weight, zeroed where the neighbour lies outside the map. Only the batch axis may be dynamic.
    """
    _, c, h, w = source.shape
    c, h, w = _static(c, "channel count"), _static(h, "height"), _static(w, "width")
    f32 = ir.DataType.FLOAT
    i64 = ir.DataType.INT64

    def const(value, dtype=f32):
        return _constant(value, dtype)

    grid = _to_float(grid)
    gx = op.Gather(grid, const(0, i64), axis=-1)  # (N, Ho, Wo)
    gy = op.Gather(grid, const(1, i64), axis=-1)
    px = op.Mul(op.Add(gx, const(1.0)), const((w - 1) / 2))
    py = op.Mul(op.Add(gy, const(1.0)), const((h - 1) / 2))
    x0, y0 = op.Floor(px), op.Floor(py)
    x1, y1 = op.Add(x0, const(1.0)), op.Add(y0, const(1.0))
    wx1, wy1 = op.Sub(px, x0), op.Sub(py, y0)
    wx0, wy0 = op.Sub(const(1.0), wx1), op.Sub(const(1.0), wy1)

    # (N*H*W, C) rows; image n starts at row n*H*W.
    rows = op.Reshape(op.Transpose(_to_float(source), perm=[0, 2, 3, 1]), const([-1, c], i64))
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
    return _restore_dtype(op.Transpose(total, perm=[0, 3, 1, 2]), source)  # (N, C, Ho, Wo)


def _constant(value, dtype: ir.DataType | None = None):
    """A Constant node holding ``value`` (the dtype inferred where None)."""
    # onnxscript's opset signatures name onnx.TensorProto; it takes onnx_ir's tensors as well
    return op.Constant(value=ir.tensor(value, dtype=dtype))  # type: ignore[arg-type]


def nms_keep_onnx(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
    """ONNX ``NonMaxSuppression`` (corner boxes), its selected (batch, class, box) triples
    scattered as ones into a zero mask shaped like ``scores``."""
    f32, i64 = ir.DataType.FLOAT, ir.DataType.INT64
    selected = op.NonMaxSuppression(
        _to_float(boxes),
        _to_float(scores),
        _constant([max_per_class], i64),
        _constant([iou_threshold], f32),
        _constant([score_threshold], f32),
        center_point_box=0,
    )
    count = op.Shape(selected, start=0, end=1)
    ones = op.Expand(_constant(1.0, f32), count)
    # onnxscript's opset signatures name onnx.TensorProto (as in _constant)
    zeros = op.ConstantOfShape(op.Shape(scores), value=ir.tensor([0.0], dtype=f32))  # type: ignore[arg-type]
    return _restore_dtype(op.ScatterND(zeros, selected, ones), scores)


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
        _to_float(features),
        _to_float(boxes),
        batch_index,  # int64: the extractor's arange
        mode=ROI_ALIGN_MODE,
        output_height=output_size,
        output_width=output_size,
        sampling_ratio=sampling_ratio,
        spatial_scale=spatial_scale,
        coordinate_transformation_mode=ROI_ALIGN_TRANSFORM[bool(aligned)],
    )
    return _restore_dtype(pooled, features)


# Queries per tile side in the ONNX graph, and how far below its row's largest logit a masked
# one is lifted: see :func:`neighborhood_attention_onnx` for both.
NEIGHBORHOOD_TILE = 7
MASK_FLOOR = 60.0


class NeighborhoodPlan:
    """Static indices of one (H, W, kernel) in the blocked formulation of
    :mod:`models.neighborhood`, T = Th * Tw tiles of Lq queries, each with a band of Lk keys.

    ``queries`` (T * Lq,) and ``keys`` (T * Lk,) are raster positions, None where they are
    the identity (a single tile); ``owner`` (H * W,) where each position's output sits among
    the T * Lq rows, None for a single tile. The bias index and the mask are separable and
    kept as their row and column factors: ``row_relative`` (Th, th, Kh) and ``col_relative``
    (Tw, tw, Kw) index the table's axes, ``row_mask`` and ``col_mask`` broadcast to (Th, Tw,
    th, tw, Kh, Kw). Whole (T, Lq, Lk) constants would be folded into the file, megabytes
    per block at 384 (ONNX Runtime computes the bias once, at load, either way).
    """

    def __init__(self, height: int, width: int, kernel: int, tile: int = NEIGHBORHOOD_TILE):
        rows = neighborhood.axis_plan(height, kernel, tile)
        cols = neighborhood.axis_plan(width, kernel, tile)
        side = 2 * kernel - 1
        (th_, th, kh), (tw_, tw, kw) = rows.relative.shape, cols.relative.shape
        self.tiles, self.queries_per_tile, self.keys_per_tile = th_ * tw_, th * tw, kh * kw

        def raster(r, c) -> np.ndarray:
            r, c = np.asarray(r, np.int64), np.asarray(c, np.int64)
            return (r[:, None, :, None] * width + c[None, :, None, :]).reshape(-1)

        queries, keys = raster(rows.queries, cols.queries), raster(rows.keys, cols.keys)
        single = self.tiles == 1  # one tile: every query, every key, in raster order
        self.queries = None if single else queries
        self.keys = None if single else keys
        self.owner = None
        if not single:
            owner = np.empty(height * width, np.int64)
            owner[queries] = np.arange(len(queries))  # a position in two tiles: either holds it
            self.owner = owner
        # Per axis the relative index is clamped into the table: outside its window a key is
        # masked, but its index must still be a valid one.
        self.row_relative = rows.relative.clamp(0, side - 1).numpy().astype(np.int64)
        self.col_relative = cols.relative.clamp(0, side - 1).numpy().astype(np.int64)
        self.row_mask = (
            np.where(rows.inside.numpy(), 0, -np.inf).astype(np.float32).reshape(th_, 1, th, 1, kh, 1)
        )
        self.col_mask = (
            np.where(cols.inside.numpy(), 0, -np.inf).astype(np.float32).reshape(1, tw_, 1, tw, 1, kw)
        )


def neighborhood_attention_onnx(q, k, v, rpb, kernel: int, scale: float):
    """Neighborhood attention (NATTEN 0.14.6 semantics) as the blocked computation of
    :mod:`models.neighborhood`: the queries of each tile and the band of keys their windows
    span are gathered with constant indices, ``softmax((q * scale) @ k^T + bias) @ v`` runs
    per tile with the gathered ``rpb`` bias plus a -inf mask outside each query's window, and
    one more Gather puts the outputs back in raster order. H, W, heads and head size are
    static in the traced graph, the batch stays dynamic.

    Why this form (measured under ONNX Runtime on the CPU: docs/benchmarks.md): the per-query
    form gathers every key k*k times (a (H*W, k*k, d) copy per head) and turns the attention
    into H*W one-row products; tiles make (49 x 169) products that MLAS runs at speed, for 169
    keys per query instead of 49. Tiles of 7 divide every DAT++ map at 224 (56, 28, 14). The
    mask: a -inf logit leaves exp() in the denormal range, where ORT's Softmax and the MatMul
    after it run at a fraction of their speed (the ``session.set_denormal_as_zero`` option
    removes it too, but the graph must be fast in any ORT, Triton's included). So each masked
    logit is lifted to the row's largest minus :data:`MASK_FLOOR` (60): its weight, at most
    e^-60 = 9e-27 of the largest, vanishes in the float32 sum (at least 1), and the result is
    the -inf form's to rounding.

    Half inputs: the products run in the input dtype and the bias, mask and softmax in
    float32, as :class:`ExportPolicy` keeps attention softmax for half graphs.
    """
    _, heads, h, w, d = q.shape
    heads, h, w, d = (
        _static(x, what, "neighborhood attention")
        for x, what in ((heads, "head count"), (h, "height"), (w, "width"), (d, "head size"))
    )
    plan = NeighborhoodPlan(h, w, kernel, NEIGHBORHOOD_TILE)
    tiles, lq, lk = plan.tiles, plan.queries_per_tile, plan.keys_per_tile
    f32 = ir.DataType.FLOAT

    def const(value):
        return _constant(np.asarray(value))

    def tiled(x, positions, length: int):
        """(B, heads, H, W, d) -> (B, heads, T, length, d): each tile's rows."""
        x = op.Reshape(x, const(np.array([-1, heads, h * w, d], np.int64)))
        if positions is not None:
            x = op.Gather(x, const(positions), axis=2)
        return op.Reshape(x, const(np.array([-1, heads, tiles, length, d], np.int64)))

    queries = tiled(op.Mul(q, op.CastLike(const(np.float32(scale)), q)), plan.queries, lq)
    keys = op.Transpose(tiled(k, plan.keys, lk), perm=[0, 1, 2, 4, 3])
    values = tiled(v, plan.keys, lk)
    # rpb (heads, 2k-1, 2k-1) read at each tile's (query, key) rows, then columns: (heads, Th,
    # th, Kh, Tw, tw, Kw), to (heads, Th, Tw, th, tw, Kh, Kw), masked, as (heads, T, Lq, Lk).
    bias = op.Gather(_to_float(rpb), const(plan.row_relative), axis=1)
    bias = op.Gather(bias, const(plan.col_relative), axis=4)
    bias = op.Transpose(bias, perm=[0, 1, 4, 2, 5, 3, 6])
    bias = op.Add(op.Add(bias, const(plan.row_mask)), const(plan.col_mask))
    bias = op.Reshape(bias, const(np.array([heads, tiles, lq, lk], np.int64)))
    scores = op.Add(_to_float(op.MatMul(queries, keys)), bias)
    # Masked logits lifted from -inf to the row's max - 60 (docstring: no denormals).
    top = op.ReduceMax(scores, const(np.array([-1], np.int64)), keepdims=1)
    scores = op.Max(scores, op.Sub(top, const(np.float32(MASK_FLOOR))))
    weights = op.Softmax(scores, axis=-1)
    if q.dtype != f32:  # half (or unknown): the product with v in v's dtype
        weights = op.CastLike(weights, v)
    out = op.Reshape(op.MatMul(weights, values), const(np.array([-1, heads, tiles * lq, d], np.int64)))
    if plan.owner is not None:
        out = op.Gather(out, const(plan.owner), axis=2)
    return op.Reshape(out, const(np.array([-1, heads, h, w, d], np.int64)))


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


# --------------------------------------------------------------------------- trace-time policy


class ExportPolicy(torch.overrides.TorchFunctionMode):
    """Rewrites attention for export and keeps precision-critical ops in float32.

    Always: ``scaled_dot_product_attention`` becomes ``softmax((q * scale) @ k^T + mask) @ v``
    (inference only: no dropout, no causal masking; the model uses neither).
    With ``fp32_islands`` (half-precision graphs): the attention softmax, the bias addition and
    every ``layer_norm`` run in float32 and cast back, so the graph carries explicit Casts that
    a strongly typed TensorRT network honours.
    """

    def __init__(self, fp32_islands: bool = False):
        super().__init__()
        self.fp32_islands = fp32_islands

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if func is F.layer_norm and self.fp32_islands:
            return self._layer_norm(*args, **kwargs)
        return func(*args, **kwargs)

    def _attention(
        self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
    ):
        if is_causal or enable_gqa:
            raise NotImplementedError("export supports non-causal attention without GQA only")
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        if self.fp32_islands:
            scores = scores.float()
        if attn_mask is not None:
            scores = scores + attn_mask.to(scores.dtype)
        return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)

    def _layer_norm(self, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        if x.dtype == torch.float32:
            return F.layer_norm(x, normalized_shape, weight, bias, eps)
        weight = None if weight is None else weight.float()
        bias = None if bias is None else bias.float()
        return F.layer_norm(x.float(), normalized_shape, weight, bias, eps).to(x.dtype)


# --------------------------------------------------------------------------- node names


def _scopes(node: ir.Node) -> list[str]:
    raw = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    try:
        scopes = ast.literal_eval(raw) if raw else []
    except (ValueError, SyntaxError):
        return []
    return [s for s in scopes if isinstance(s, str)]


def _fx_target(node: ir.Node) -> str:
    """'dat.sample_kv.default' from a namespace ending in '/sample_kv_1: dat.sample_kv.default'."""
    namespace = node.metadata_props.get("namespace", "")
    return namespace.rsplit("/", 1)[-1].split(": ", 1)[-1]


def name_nodes(model: ir.Model, wrapper: str = "") -> None:
    """Names every node ``<module path>/<step>/<OpType>``, e.g.
    ``stages.2.attns.1/deformable_kv/GridSample`` or ``stages.0.mlps.1/linear/MatMul``.

    ``<step>`` is the seam name (``deformable_kv``, ``bias_interpolation``, ``neighborhood``,
    ``nms``) for the nodes that translate a seam, otherwise the traced operation's name.
    Repeated names get a numeric suffix. Nodes without export metadata (added by graph
    optimisation) keep their names.
    ``wrapper`` is the attribute under which an export wrapper holds the model (e.g. ``model``);
    it is dropped from the paths so names read the same for every precision.
    """
    taken: Counter = Counter()
    for node in model.graph:
        scopes = _scopes(node)
        node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)  # build-machine paths
        if not scopes:
            continue
        module = next((s for s in reversed(scopes[:-1]) if s), "")
        if wrapper and (module == wrapper or module.startswith(wrapper + ".")):
            module = module[len(wrapper) + 1 :]
        target = _fx_target(node)
        seam = SEAM_OPS.get(target.split(".")[1], "") if target.startswith("dat.") else ""
        base = "/".join(p for p in (module, seam or scopes[-1], node.op_type) if p)
        taken[base] += 1
        node.name = base if taken[base] == 1 else f"{base}_{taken[base] - 1}"

"""Our ONNX translations of the model's two sampling seams, and the export-time op policy.

During export the two seams of :mod:`models.sampling` are swapped for the custom ops
``dat::sample_kv`` (deformable key/value sampling) and ``dat::interp_bias`` (relative position
bias interpolation). ``torch.export`` keeps them as single opaque nodes, and the ONNX exporter
translates each with one of our functions:

``native``
    one ``GridSample`` node per seam with pinned attributes: ``mode="bilinear"``,
    ``padding_mode="zeros"``, ``align_corners=1``. Only exported at opset 18-19: opset 20
    renamed the mode to ``linear``, which TensorRT's ONNX parser reads as nearest.
``decomposed``
    the same bilinear sampling written with ``Gather`` and arithmetic, no ``GridSample`` at
    all, for runtimes whose GridSample is missing or wrong.

Both compute in float32 whatever the input dtype (a half-precision grid misplaces samples by a
visible fraction of a pixel) and cast the result back to the input's dtype.

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

import onnx_ir as ir
import torch
import torch.nn.functional as F
from onnxscript import opset18 as op

from models import nms, sampling

GRID_SAMPLE_MODES = ("native", "decomposed")
# Opsets at which a GridSample node may be emitted: 16 introduced it, 20 renamed its mode.
NATIVE_OPSETS = range(16, 20)
SEAM_OPS = {"sample_kv": "deformable_kv", "interp_bias": "bias_interpolation", "nms_keep": "nms"}


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
def nms_keep_op(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float,
                score_threshold: float) -> torch.Tensor:
    """The detector's NMS seam as an opaque op: (B, N, 4), (B, C, N) -> keep mask (B, C, N)."""
    return nms.greedy_nms_keep(boxes, scores, max_per_class, iou_threshold, score_threshold)


@nms_keep_op.register_fake
def _(boxes, scores, max_per_class, iou_threshold, score_threshold):
    return torch.empty_like(scores)


@contextlib.contextmanager
def opaque_seams() -> Iterator[None]:
    """Routes the model's seams (both samplings, and a detector's NMS) through the custom ops
    while a model is traced."""
    with sampling.override(deformable_kv=torch.ops.dat.sample_kv,
                           bias_interpolation=torch.ops.dat.interp_bias), \
            nms.override(torch.ops.dat.nms_keep):
        yield


# --------------------------------------------------------------------------- ONNX translations


def _to_float(value):
    return value if value.dtype == ir.DataType.FLOAT else op.Cast(value, to=ir.DataType.FLOAT)


def _restore_dtype(result, like):
    return result if like.dtype in (None, ir.DataType.FLOAT) else op.Cast(result, to=like.dtype)


def grid_sample_native(source, grid):
    """One pinned ``GridSample`` (float32 inside, input dtype outside)."""
    result = op.GridSample(_to_float(source), _to_float(grid),
                           mode="bilinear", padding_mode="zeros", align_corners=1)
    return _restore_dtype(result, source)


def _static(dim, what: str) -> int:
    if not isinstance(dim, int):
        raise NotImplementedError(f"decomposed grid sampling needs a static {what}, got {dim!r}")
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
        return op.Constant(value=ir.tensor(value, dtype=dtype))

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
        inside = op.And(op.And(op.GreaterOrEqual(x, const(0.0)), op.LessOrEqual(x, const(w - 1.0))),
                        op.And(op.GreaterOrEqual(y, const(0.0)), op.LessOrEqual(y, const(h - 1.0))))
        xi = op.Cast(op.Clip(x, const(0.0), const(w - 1.0)), to=i64)
        yi = op.Cast(op.Clip(y, const(0.0), const(h - 1.0)), to=i64)
        index = op.Add(first_row, op.Add(op.Mul(yi, const(w, i64)), xi))  # (N, Ho, Wo)
        weight = op.Where(inside, weight, const(0.0))
        return op.Mul(op.Gather(rows, index, axis=0), op.Unsqueeze(weight, const([-1], i64)))

    total = op.Add(op.Add(corner(x0, y0, op.Mul(wx0, wy0)), corner(x1, y0, op.Mul(wx1, wy0))),
                   op.Add(corner(x0, y1, op.Mul(wx0, wy1)), corner(x1, y1, op.Mul(wx1, wy1))))
    return _restore_dtype(op.Transpose(total, perm=[0, 3, 1, 2]), source)  # (N, C, Ho, Wo)


def nms_keep_onnx(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
    """ONNX ``NonMaxSuppression`` (corner boxes), its selected (batch, class, box) triples
    scattered as ones into a zero mask shaped like ``scores``."""
    f32, i64 = ir.DataType.FLOAT, ir.DataType.INT64
    selected = op.NonMaxSuppression(
        _to_float(boxes), _to_float(scores),
        op.Constant(value=ir.tensor([max_per_class], dtype=i64)),
        op.Constant(value=ir.tensor([iou_threshold], dtype=f32)),
        op.Constant(value=ir.tensor([score_threshold], dtype=f32)), center_point_box=0)
    count = op.Shape(selected, start=0, end=1)
    ones = op.Expand(op.Constant(value=ir.tensor(1.0, dtype=f32)), count)
    zeros = op.ConstantOfShape(op.Shape(scores), value=ir.tensor([0.0], dtype=f32))
    return _restore_dtype(op.ScatterND(zeros, selected, ones), scores)


def translation_table(grid_sample: str, opset: int) -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: both seams in one mode."""
    if grid_sample not in GRID_SAMPLE_MODES:
        raise ValueError(f"grid-sample mode must be one of {GRID_SAMPLE_MODES}, got {grid_sample!r}")
    if grid_sample == "native" and opset not in NATIVE_OPSETS:
        raise ValueError(
            f"a native GridSample cannot be exported at opset {opset}: opset 20 renamed its mode "
            "to 'linear', which TensorRT reads as nearest; use --opset 18 or --grid-sample decomposed")
    fn = grid_sample_native if grid_sample == "native" else grid_sample_decomposed
    return {torch.ops.dat.sample_kv.default: fn, torch.ops.dat.interp_bias.default: fn,
            torch.ops.dat.nms_keep.default: nms_keep_onnx}


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

    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
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

    ``<step>`` is the seam name (``deformable_kv`` / ``bias_interpolation``) for the nodes that
    translate a seam, otherwise the traced operation's name. Repeated names get a numeric
    suffix. Nodes without export metadata (added by graph optimisation) keep their names.
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
            module = module[len(wrapper) + 1:]
        target = _fx_target(node)
        seam = SEAM_OPS.get(target.split(".")[1], "") if target.startswith("dat.") else ""
        base = "/".join(p for p in (module, seam or scopes[-1], node.op_type) if p)
        taken[base] += 1
        node.name = base if taken[base] == 1 else f"{base}_{taken[base] - 1}"

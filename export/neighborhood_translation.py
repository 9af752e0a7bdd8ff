"""The ONNX translation of DAT++'s neighborhood attention seam (:mod:`models.neighborhood`):
written out exactly with Gather and MatMul over static window indices, tile by tile
(:func:`neighborhood_attention_onnx`, its indices in :class:`NeighborhoodPlan`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript import opset18 as op

from models import neighborhood

from .seam_translations import constant, static_dim, to_float

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
    float32, as :class:`export.trace_policy.ExportPolicy` keeps attention softmax for half graphs.
    """
    _, heads, h, w, d = q.shape
    heads, h, w, d = (
        static_dim(x, what, "neighborhood attention")
        for x, what in ((heads, "head count"), (h, "height"), (w, "width"), (d, "head size"))
    )
    plan = NeighborhoodPlan(h, w, kernel, NEIGHBORHOOD_TILE)
    tiles, lq, lk = plan.tiles, plan.queries_per_tile, plan.keys_per_tile
    f32 = ir.DataType.FLOAT

    def const(value):
        return constant(np.asarray(value))

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
    bias = op.Gather(to_float(rpb), const(plan.row_relative), axis=1)
    bias = op.Gather(bias, const(plan.col_relative), axis=4)
    bias = op.Transpose(bias, perm=[0, 1, 4, 2, 5, 3, 6])
    bias = op.Add(op.Add(bias, const(plan.row_mask)), const(plan.col_mask))
    bias = op.Reshape(bias, const(np.array([heads, tiles, lq, lk], np.int64)))
    scores = op.Add(to_float(op.MatMul(queries, keys)), bias)
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

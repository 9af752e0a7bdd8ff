"""``N`` block: neighborhood attention (DAT++), with NATTEN 0.14.6's semantics in pure PyTorch.

Each query attends the k x k keys around it, and at the borders the window is shifted inwards
to stay inside the map (no zero padding). Along an axis of length L with r = k // 2, query i
attends keys ``start(i) .. start(i) + k - 1`` with ``start(i) = max(i - r, 0) + (i + r >= L) *
(L - i - r - 1)``, and the bias of key j is ``rpb[h, j - i + k - 1]`` per axis: NATTEN's
"bias start" works out to the plain relative position. The official ``nat.py`` pads the map
(right and bottom, zeros) when it is smaller than the kernel, and crops after.

The attention itself is one seam, :func:`neighborhood_attention`, like the two samplings of
:mod:`models.sampling`: eager mode runs :func:`blocked_neighborhood_attention`, and the exporter
swaps in an opaque op (:func:`override`) that it translates to ONNX.

Blocked computation: the map is cut into tiles of queries; the keys of a tile's queries form a
contiguous band of at most ``tile + k - 1`` rows and columns, so each tile is one dense
attention over its band with a static additive mask (the bias inside each query's window,
-inf outside). Gathered keys grow by ``(th + k - 1)(tw + k - 1) / (th tw)`` for th x tw tiles
instead of the ``k^2`` of gathering every query's window, and the attention runs in the fused
SDPA kernels.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import _eager, attention_mask, linear

# (q, k, v (B, heads, H, W, head_dim), rpb (heads, 2k-1, 2k-1), kernel, scale) -> like q
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float], torch.Tensor]

# Queries per tile, (rows, columns). A query's band holds (rows + k - 1)(columns + k - 1) keys,
# so small tiles waste less work, but each tile costs the attention kernel a block of its own:
# `python -m bench neighborhood` measures the choice. For k = 7, 4 x 7 (28 queries, 130 keys)
# took less time than 8 x 8 (64, 196) on the 56 and 28 maps of DAT-T++, in fp32 and bf16.
TILE = (4, 7)


def tile_shape(height: int, width: int, kernel: int) -> tuple[int, int]:
    """The tiles of an H x W map: one tile, the map itself, when it is at most 2k on each side
    (its band is then the map: no gathers; measured the fastest on the 14 x 14 maps), else
    ``TILE``."""
    if max(height, width) <= 2 * kernel:
        return height, width
    return TILE


def window_starts(length: int, kernel: int) -> list[int]:
    """NATTEN's first key of each query's window along one axis (dilation 1), ``length >= kernel``."""
    r = kernel // 2
    return [max(i - r, 0) + (i + r >= length) * (length - i - r - 1) for i in range(length)]


class AxisPlan(NamedTuple):
    """How one axis of length L is cut into T tiles of t queries, each with a band of K keys:
    ``queries`` (T, t) and ``keys`` (T, K) index the axis, ``relative`` (T, t, K) is
    key - query + k - 1 (the bias index), ``inside`` (T, t, K) whether the key is in the
    query's window."""

    queries: list[list[int]]
    keys: list[list[int]]
    relative: torch.Tensor
    inside: torch.Tensor


def axis_plan(length: int, kernel: int, tile: int) -> AxisPlan:
    starts = window_starts(length, kernel)
    band = tile + kernel - 1
    if length <= band:  # one tile: every query, every key
        tiles = [list(range(length))]
    else:
        # The last tile is shifted back to end at the map's edge: uniform shapes, and its
        # overlap with the tile before is computed twice and read once.
        firsts = [min(j * tile, length - tile) for j in range(math.ceil(length / tile))]
        tiles = [list(range(first, first + tile)) for first in firsts]
    width = min(length, band)
    # A tile's windows span starts[last] + k - starts[first] <= band keys: one band holds them.
    keys = [
        list(range(min(starts[rows[0]], length - width), min(starts[rows[0]], length - width) + width))
        for rows in tiles
    ]
    query_t, key_t = torch.tensor(tiles), torch.tensor(keys)
    offset = key_t[:, None, :] - torch.tensor(starts)[query_t][..., None]  # (T, t, K)
    relative = key_t[:, None, :] - query_t[..., None] + kernel - 1
    return AxisPlan(tiles, keys, relative, (offset >= 0) & (offset < kernel))


class Layout(NamedTuple):
    """Everything static about one (H, W, kernel) on one device, T = Th * Tw tiles of Lq
    queries and Lk keys, tile-major."""

    queries: torch.Tensor  # (T * Lq,) raster positions of each tile's queries
    keys: torch.Tensor  # (T * Lk,) raster positions of each tile's band of keys
    owner: torch.Tensor | None  # (H * W,) where each position's output sits in the T * Lq rows
    bias_index: torch.Tensor  # (T, Lq, Lk) into the flattened rpb
    mask: torch.Tensor  # (T, Lq, Lk) float32: 0 inside each query's window, -inf outside


def _raster(rows: torch.Tensor, cols: torch.Tensor, width: int) -> torch.Tensor:
    """Row tiles (Th, a) x column tiles (Tw, b) -> (Th * Tw * a * b,) positions in an H x W map."""
    return (rows[:, None, :, None] * width + cols[None, :, None, :]).reshape(-1)


def layout(
    height: int, width: int, kernel: int, device: torch.device, tile: int | tuple[int, int] | None = None
) -> Layout:
    """Built once per size and device, so an eager forward pass makes no host-to-device copy
    (and can be captured in a CUDA graph after a warm-up); a trace builds its own. ``tile``
    (rows, columns), or one side of square tiles: by default :func:`tile_shape`'s."""
    if tile is None:
        tile = tile_shape(height, width, kernel)
    elif isinstance(tile, int):
        tile = (tile, tile)
    if not _eager():  # e.g. torch.export's fake tensors, which must not outlive the trace
        return _build_layout(height, width, kernel, device, tile)
    return _cached_layout(height, width, kernel, device, tile)


@functools.cache
def _cached_layout(
    height: int, width: int, kernel: int, device: torch.device, tile: tuple[int, int]
) -> Layout:
    with torch.inference_mode(False):  # plain tensors, even when first asked for in inference
        return _build_layout(height, width, kernel, device, tile)


def _build_layout(
    height: int, width: int, kernel: int, device: torch.device, tile: tuple[int, int]
) -> Layout:
    rows, cols = axis_plan(height, kernel, tile[0]), axis_plan(width, kernel, tile[1])
    side = 2 * kernel - 1
    index = rows.relative[:, None, :, None, :, None] * side + cols.relative[None, :, None, :, None, :]
    inside = rows.inside[:, None, :, None, :, None] & cols.inside[None, :, None, :, None, :]
    (Th, th, Kh), (Tw, tw, Kw) = rows.relative.shape, cols.relative.shape
    shape = (Th * Tw, th * tw, Kh * Kw)  # (Th, Tw, th, tw, Kh, Kw): tile pair, query, key
    queries = _raster(torch.tensor(rows.queries), torch.tensor(cols.queries), width)
    keys = _raster(torch.tensor(rows.keys), torch.tensor(cols.keys), width)
    owner = None
    if Th * Tw > 1:  # tile-major rows back to raster order
        owner = torch.empty(height * width, dtype=torch.long)
        owner[queries] = torch.arange(len(queries))  # a position in two tiles: the later one
    return Layout(
        queries.to(device),
        keys.to(device),
        None if owner is None else owner.to(device),
        index.clamp(0, side * side - 1).reshape(shape).to(device),
        torch.zeros(shape).masked_fill(~inside.reshape(shape), float("-inf")).to(device),
    )


def _gather(x: torch.Tensor, positions: torch.Tensor, tiles: int) -> torch.Tensor:
    """(B, heads, H, W, d) at raster ``positions`` (T * L,) -> (B, heads * T, L, d), in one
    copy straight into the layout the attention kernel takes."""
    B, heads, _, _, d = x.shape
    return x.flatten(2, 3).index_select(2, positions).view(B, heads * tiles, -1, d)


def _window_bias(rpb: torch.Tensor, plan: Layout) -> torch.Tensor:
    """The tiles' additive bias (1, heads * T, Lq, Lk), float32: rpb read at each query's
    window, -inf outside it. A pure function of the weights, so inference keeps it on the
    table itself (one map size at a time) until the table changes: an in-place load bumps its
    version, a new tensor its address. Autograd and traced graphs compute it every time."""
    heads, tiles = rpb.shape[0], plan.mask.shape[0]

    def compute() -> torch.Tensor:
        bias = rpb.float().flatten(1)[:, plan.bias_index] + plan.mask  # (heads, T, Lq, Lk)
        return bias.view(1, heads * tiles, *plan.mask.shape[1:])

    if (torch.is_grad_enabled() and rpb.requires_grad) or not _eager():
        return compute()
    key = (id(plan), rpb.data_ptr(), rpb._version)
    cached = rpb.__dict__.get("_window_bias")
    if cached is None or cached[0] != key:
        cached = rpb.__dict__["_window_bias"] = (key, compute())
    return cached[1]


def blocked_neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb: torch.Tensor,
    kernel: int,
    scale: float,
    tile: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Neighborhood attention with relative position bias, NATTEN 0.14.6 semantics (module
    docstring). q, k, v (B, heads, H, W, head_dim) with H, W >= kernel; rpb (heads, 2k-1, 2k-1);
    ``tile`` as :func:`layout` takes it. Returns (B, heads, H, W, head_dim)."""
    B, heads, H, W, d = q.shape
    plan = layout(H, W, kernel, q.device, tile)
    tiles = plan.mask.shape[0]
    bias = attention_mask(_window_bias(rpb, plan), q)
    if tiles == 1:  # the band is the map: the attention reads q, k, v where they lie
        q, k, v = q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3)
    else:
        # contiguous first: the gathers then read whole rows, and cost less in all than
        # gathering from strided views
        q = _gather(q.contiguous(), plan.queries, tiles)
        k = _gather(k.contiguous(), plan.keys, tiles)
        v = _gather(v.contiguous(), plan.keys, tiles)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)  # (B, heads * T, Lq, d)
    out = out.view(B, heads, -1, d)
    if plan.owner is not None:
        out = out.index_select(2, plan.owner)
    return out.view(B, heads, H, W, d)


_SEAM: dict[str, AttentionFn] = {"neighborhood": blocked_neighborhood_attention}


def neighborhood_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor, kernel: int, scale: float
) -> torch.Tensor:
    """The neighborhood attention seam; same contract as :func:`blocked_neighborhood_attention`."""
    return _SEAM["neighborhood"](q, k, v, rpb, kernel, scale)


@contextlib.contextmanager
def override(fn: AttentionFn) -> Iterator[None]:
    """Temporarily replaces the neighborhood attention seam (the exporter's opaque op)."""
    previous = _SEAM["neighborhood"]
    _SEAM["neighborhood"] = fn
    try:
        yield
    finally:
        _SEAM["neighborhood"] = previous


class NeighborhoodAttention(nn.Module):
    """``N`` block (official ``NeighborhoodAttention2D``): qkv, neighborhood attention with its
    relative position bias ``rpb``, projection. Channels-last in and out. Attention dropout, a
    training option no released model uses, is not applied."""

    def __init__(self, dim: int, kernel: int, heads: int, proj_drop: float):
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"neighborhood size must be odd and at least 3, got {kernel}")
        self.heads, self.kernel = heads, kernel
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rpb = nn.Parameter(torch.zeros(heads, 2 * kernel - 1, 2 * kernel - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        """x (B, H, W, C) -> (B, H, W, C)."""
        B, height, width, C = x.shape
        pad_h, pad_w = max(0, self.kernel - height), max(0, self.kernel - width)
        if pad_h or pad_w:  # as the official nat.py: zeros right and bottom, cropped after
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        H, W = x.shape[1:3]
        qkv = linear(x, self.qkv.weight, self.qkv.bias).view(B, H, W, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # (B, heads, H, W, d) views
        out = neighborhood_attention(q, k, v, self.rpb, self.kernel, self.scale)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        if pad_h or pad_w:
            out = out[:, :height, :width]
        return self.proj_drop(linear(out, self.proj.weight, self.proj.bias)), None, None

"""``D`` block: deformable multi-head attention (the official ``DAttentionBaseline``).

Queries come from every position; keys and values are sampled at a grid of reference points
shifted by offsets that a small network predicts from the queries (one offset field per
group of channels). The relative position bias is read from a continuous table at the
query-to-sample displacements. Both samplings go through :mod:`models.sampling`.

DAT v1 and DAT++ (``plus_plus``) differ here, each as its official code computes it:

============================  ===============================  ==================================
                              v1                               DAT++
============================  ===============================  ==================================
reference points (n samples)  centres ``(i + 0.5) / n``        centres ``(i + 0.5) / (n - 1)``
query grid (n queries)        the same centres                 ``i / (n - 1)`` (corners)
offset range                  ``factor / n``, factor > 0       ``factor / (n - 1)``, factor >= 0
factor < 0                    ``tanh(offset + reference)``     ``clamp(offset + reference, ±1)``
offset conv padding           ``k // 2``                       ``k // 2``, 0 when k == stride
position bias                 table                            table, or ``log_cpb``'s MLP
============================  ===============================  ==================================

(all in [0, 1] before the map to [-1, 1]). The bias table is read in normalised coordinates,
so a DAT++ model (and its detection backbone) runs at any input size with the table it was
trained with; grids for a size other than the configured one are computed on first use.

The attention runs in chunks of queries (:func:`query_chunks`): its bias, logits and weights
hold heads x queries x samples numbers each, which grows with the fourth power of the
picture's side (1.6 GB per tensor for stage 1 of DAT-T++ on a 1344 x 1344 canvas). Queries do
not see each other, so the chunks' results are the whole's; classification sizes fit in one.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import LayerNormProxy, _eager, attention_mask, linear
from .sampling import interpolate_position_bias, sample_keys_values

# At most this many (head, query, sample) elements per image in one chunk of a D block's
# attention: 64 MB per float32 tensor (bias, logits, weights, and the grid of displacements).
QUERY_CHUNK_ELEMENTS = 1 << 24


def query_chunks(queries: int, heads: int, samples: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of queries, of near-equal sizes, such that heads x chunk x
    samples stays within :data:`QUERY_CHUNK_ELEMENTS`; one chunk when the whole map does."""
    rows = max(1, QUERY_CHUNK_ELEMENTS // (heads * samples))
    count = math.ceil(queries / rows)
    bounds = [queries * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def reference_points(height: int, width: int, plus_plus: bool = False) -> torch.Tensor:
    """(height, width, 2) pixel centres as (y, x), normalised to [-1, 1] (float32); DAT++
    divides by n - 1 instead of n."""
    ys = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32)
    xs = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32)
    ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
    dy, dx = (height - 1.0, width - 1.0) if plus_plus else (height, width)
    return torch.stack((ref_y.div(dy).mul(2).sub(1), ref_x.div(dx).mul(2).sub(1)), -1)


def query_points(height: int, width: int, plus_plus: bool = False) -> torch.Tensor:
    """(height * width, 2) query positions as (y, x) in [-1, 1]: v1 uses the pixel centres,
    DAT++ ``i / (n - 1)``."""
    if not plus_plus:
        return reference_points(height, width).view(-1, 2)
    ys = torch.arange(height, dtype=torch.float32).div(height - 1.0).mul(2).sub(1)
    xs = torch.arange(width, dtype=torch.float32).div(width - 1.0).mul(2).sub(1)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_y, grid_x), -1).view(-1, 2)


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 Conv2d applied to channels-last input as the Linear it is."""
    return linear(x, conv.weight.flatten(1), conv.bias)


class LogCPB(nn.Sequential):
    """DAT++'s ``log_cpb`` bias (after Swin V2): an MLP of the log-spaced displacement."""

    def __init__(self, group_heads: int):
        super().__init__(nn.Linear(2, 32), nn.ReLU(inplace=True), nn.Linear(32, group_heads, bias=False))

    def bias(self, displacement: torch.Tensor) -> torch.Tensor:
        """(N, Q, S, 2) (y, x) displacements in [-1, 1] units -> (N, group_heads, Q, S)."""
        d = displacement.mul(4.0)  # the official scale: [-8, 8]
        d = torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8.0)
        return self(d).permute(0, 3, 1, 2)


class DeformableAttention(nn.Module):
    # buffers: the sampling grids at the built size
    reference: torch.Tensor
    query_grid: torch.Tensor
    offset_range: torch.Tensor

    def __init__(
        self,
        dim: int,
        heads: int,
        groups: int,
        fmap: int,
        stride: int,
        offset_range_factor: float,
        use_pe: bool,
        no_off: bool,
        kernel: int,
        attn_drop: float,
        proj_drop: float,
        *,
        plus_plus: bool = False,
        log_cpb: bool = False,
    ):
        super().__init__()
        self.heads, self.groups = heads, groups
        self.head_dim = dim // heads
        self.group_channels = dim // groups
        self.scale = self.head_dim**-0.5
        self.offset_range_factor = offset_range_factor
        self.no_off = no_off
        self.plus_plus = plus_plus
        self.attn_drop = attn_drop

        cg = self.group_channels
        pad = 0 if plus_plus and kernel == stride else kernel // 2
        self.conv_offset = nn.Sequential(
            nn.Conv2d(cg, cg, kernel, stride, pad, groups=cg),
            LayerNormProxy(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, 1, 0, bias=False),
        )
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

        self.rpe_table: nn.Parameter | LogCPB | None = None
        if use_pe and log_cpb:
            self.rpe_table = LogCPB(heads // groups)
        elif use_pe:
            self.rpe_table = nn.Parameter(torch.zeros(heads, 2 * fmap - 1, 2 * fmap - 1))
            nn.init.trunc_normal_(self.rpe_table, std=0.01)

        samples = (fmap + 2 * pad - kernel) // stride + 1
        self.fmap, self.sample_size = fmap, samples
        # Constant grids for the configured size, kept float32 whatever the model's dtype (see
        # _apply); other sizes get theirs from _grids.
        self.register_buffer("reference", reference_points(samples, samples, plus_plus), persistent=False)
        self.register_buffer("query_grid", query_points(fmap, fmap, plus_plus), persistent=False)
        # Offsets are scaled to at most offset_range_factor sample cells, (y, x). A buffer, so
        # that a forward pass makes no host-to-device copy (and can be captured as a graph).
        self.register_buffer("offset_range", self._offset_range(samples, samples), persistent=False)
        self._other_sizes: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._displacements: dict[tuple, torch.Tensor] = {}

    def _offset_range(self, hk: int, wk: int) -> torch.Tensor:
        cells = (hk - 1.0, wk - 1.0) if self.plus_plus else (hk, wk)
        return torch.tensor([1.0 / cells[0], 1.0 / cells[1]])

    def _apply(self, fn, recurse=True):
        # Positions are computed in float32 even in a half-precision model: in fp16 a
        # normalised coordinate near 1 is off by up to 5e-4, and the bias table spans only
        # 2H - 1 cells, so the error would show in the attention logits.
        super()._apply(fn, recurse)
        self.reference = self.reference.float()
        self.query_grid = self.query_grid.float()
        self.offset_range = self.offset_range.float()
        self._other_sizes, self._displacements = {}, {}
        return self

    def _grids(
        self, height: int, width: int, hk: int, wk: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reference points (hk, wk, 2), query grid (H*W, 2) and offset range (2,) for an
        input of height x width queries and hk x wk samples, float32 on ``device``."""
        if (height, width, hk, wk) == (self.fmap, self.fmap, self.sample_size, self.sample_size):
            return self.reference, self.query_grid, self.offset_range
        key = (height, width, hk, wk, device)
        if not _eager():  # a trace's (fake) tensors must not be kept for later calls
            return (
                reference_points(hk, wk, self.plus_plus).to(device),
                query_points(height, width, self.plus_plus).to(device),
                self._offset_range(hk, wk).to(device),
            )
        if key not in self._other_sizes:
            with torch.inference_mode(False):  # plain tensors: autograd may save them later
                self._other_sizes[key] = tuple(
                    t.to(device)
                    for t in (
                        reference_points(hk, wk, self.plus_plus),
                        query_points(height, width, self.plus_plus),
                        self._offset_range(hk, wk),
                    )
                )
        return self._other_sizes[key]  # type: ignore[return-value]

    def _displacements_to(
        self, query_grid: torch.Tensor, halved: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        """(images, Q, Ns, 2) displacements, (x, y) halved, from queries ``start:stop`` of the
        grid to the (images, 1, Ns, 2) halved sample positions. A broadcast with an innermost
        size of 2 ran several times slower, on CPU in PyTorch and in ONNX Runtime, so eager
        lays the queries out over the samples first, (1, Q, Ns, 2) contiguous, and keeps that
        copy while the whole map is one chunk (one copy per block and forward less). A traced
        graph subtracts per coordinate instead, each broadcast over the samples' axis: a
        constant laid out over the samples would be folded into the ONNX Runtime session, Q x
        Ns x 2 floats per block (3.3 GB for DAT-T++ on a 1344 x 1344 canvas)."""
        queries = query_grid[start:stop].flip(-1).mul(0.5)[None, :, None, :]
        if not _eager():
            return torch.stack([queries[..., i] - halved[..., i] for i in (0, 1)], dim=-1)
        samples = halved.shape[2]
        whole = (start, stop) == (0, query_grid.shape[0])
        if torch.is_grad_enabled() or not whole:
            return queries.expand(1, -1, samples, -1).contiguous() - halved
        key = (query_grid.data_ptr(), samples)
        if key not in self._displacements:
            self._displacements = {key: queries.expand(1, -1, samples, -1).contiguous()}  # one size
        return self._displacements[key] - halved

    def sampling_positions(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deformed sampling points (B * groups, Hk, Wk, 2), (y, x) in [-1, 1], float32; with
        the reference points and the query grid they were computed against."""
        B, H, W, _ = q.shape
        # Groups to the batch, channels-last: the NCHW view with channels-last strides runs the
        # depth-wise conv several times faster on CPU than an NCHW copy does.
        q_groups = q.view(B, H, W, self.groups, self.group_channels).permute(0, 3, 1, 2, 4)
        q_groups = q_groups.reshape(B * self.groups, H, W, self.group_channels).permute(0, 3, 1, 2)
        dwconv, norm, act, to_offset = self.conv_offset
        hidden = act(norm(dwconv(q_groups).permute(0, 2, 3, 1)))
        offset = linear(hidden, cast(nn.Conv2d, to_offset).weight.flatten(1)).float()  # (B*g, Hk, Wk, 2)
        reference, query_grid, offset_range = self._grids(H, W, offset.shape[1], offset.shape[2], q.device)
        scaled = self.offset_range_factor >= 0 if self.plus_plus else self.offset_range_factor > 0
        if scaled:
            offset = offset.tanh().mul(offset_range).mul(self.offset_range_factor)
        if self.no_off:
            offset = torch.zeros_like(offset)
        pos = offset + reference
        if self.offset_range_factor < 0:
            pos = pos.clamp(-1.0, 1.0) if self.plus_plus else pos.tanh()
        return pos, reference, query_grid

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pos: torch.Tensor,
        query_grid: torch.Tensor,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        """Attention of queries ``start:stop``, q (B, heads, Q, hd), to the sampled k, v (B,
        heads, Ns, hd), with their position bias at the displacements to the sample positions
        ``pos`` (B * g, Hk, Wk, 2), (y, x). Returns (B, heads, Q, hd)."""
        B, heads, queries, _ = q.shape
        g, samples = self.groups, pos.shape[1] * pos.shape[2]
        bias = None
        if isinstance(self.rpe_table, LogCPB):
            displacement = query_grid[None, start:stop, None, :] - pos.reshape(B * g, 1, samples, 2)
            bias = self.rpe_table.bias(displacement.to(q.dtype)).float()
            bias = attention_mask(bias.reshape(B, heads, queries, samples), q)
        elif self.rpe_table is not None:
            table = self.rpe_table.float().expand(B, -1, -1, -1)
            table = table.reshape(B * g, heads // g, *self.rpe_table.shape[1:])
            # Flipped and halved before the broadcast (halving is exact in binary floating
            # point): one pass over the (B * g, Q, Ns, 2) displacements instead of three.
            halved = pos.flip(-1).mul(0.5).reshape(B * g, 1, samples, 2)
            displacement = self._displacements_to(query_grid, halved, start, stop)
            bias = interpolate_position_bias(table, displacement)
            bias = attention_mask(bias.reshape(B, heads, queries, samples), q)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, scale=self.scale, dropout_p=self.attn_drop if self.training else 0.0
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, H, W, C) -> (out (B, H, W, C), positions, references (B, g, Hk, Wk, 2))."""
        B, H, W, C = x.shape
        g, heads, hd = self.groups, self.heads, self.head_dim
        q = _pointwise(self.proj_q, x)
        pos, reference, query_grid = self.sampling_positions(q)
        hk, wk = pos.shape[1], pos.shape[2]

        # Both samplings run in float32: a half-precision grid misplaces samples by a visible
        # fraction of a pixel, and CPU bf16 grid sampling can return NaN.
        # (B * g, cg, H, W) with channels-last strides: the copy moves whole groups of channels
        # (none for one group), and the sampling reads each point's channels together; two to
        # four times faster than an NCHW copy for DAT-T++'s stages 2 to 4
        features = x.view(B, H, W, g, self.group_channels).permute(0, 3, 1, 2, 4).contiguous().float()
        features = features.view(B * g, H, W, self.group_channels).permute(0, 3, 1, 2)
        pos_xy = pos.flip(-1)  # both samplings take (x, y) grids
        sampled = sample_keys_values(features, pos_xy).to(x.dtype)
        # (B, Ns, C), contiguous: the oneDNN projections take contiguous rows only
        sampled = sampled.reshape(B, C, hk * wk).transpose(1, 2).contiguous()
        k = _pointwise(self.proj_k, sampled).view(B, -1, heads, hd).transpose(1, 2)
        v = _pointwise(self.proj_v, sampled).view(B, -1, heads, hd).transpose(1, 2)
        q = q.view(B, H * W, heads, hd).transpose(1, 2)

        chunks = query_chunks(H * W, heads, hk * wk)
        outs = [
            self._attend(q[:, :, start:stop], k, v, pos, query_grid, start, stop) for start, stop in chunks
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        out = self.proj_drop(_pointwise(self.proj_out, out))
        positions = pos.view(B, g, hk, wk, 2)
        return out, positions, reference.expand(B, g, -1, -1, -1)

"""``D`` block: deformable multi-head attention (DAT v1, ``DAttentionBaseline``).

Queries come from every position; keys and values are sampled at a grid of reference points
shifted by offsets that a small network predicts from the queries (one offset field per
group of channels). The relative position bias is read from a continuous table at the
query-to-sample displacements. Both samplings go through :mod:`models.sampling`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import LayerNormProxy, attention_mask, linear
from .sampling import interpolate_position_bias, sample_keys_values

# Depthwise kernel of the offset network, by stage (official values).
_OFFSET_KERNELS = (9, 7, 5, 3)


def reference_points(height: int, width: int) -> torch.Tensor:
    """(height, width, 2) pixel centres as (y, x), normalised to [-1, 1] (float32)."""
    ys = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32)
    xs = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32)
    ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((ref_y.div(height).mul(2).sub(1), ref_x.div(width).mul(2).sub(1)), -1)


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 Conv2d applied to channels-last input as the Linear it is."""
    return linear(x, conv.weight.flatten(1), conv.bias)


class DeformableAttention(nn.Module):
    def __init__(self, dim: int, heads: int, groups: int, fmap: int, stride: int,
                 offset_range_factor: float, use_pe: bool, no_off: bool, stage: int,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads, self.groups = heads, groups
        self.head_dim = dim // heads
        self.group_channels = dim // groups
        self.scale = self.head_dim ** -0.5
        self.offset_range_factor = offset_range_factor
        self.no_off = no_off
        self.attn_drop = attn_drop

        kernel = _OFFSET_KERNELS[stage]
        cg = self.group_channels
        self.conv_offset = nn.Sequential(
            nn.Conv2d(cg, cg, kernel, stride, kernel // 2, groups=cg),
            LayerNormProxy(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, 1, 0, bias=False),
        )
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

        if use_pe:
            self.rpe_table = nn.Parameter(torch.zeros(heads, 2 * fmap - 1, 2 * fmap - 1))
            nn.init.trunc_normal_(self.rpe_table, std=0.01)
        else:
            self.rpe_table = None

        samples = (fmap + 2 * (kernel // 2) - kernel) // stride + 1
        self.sample_size = samples
        # Constant grids, kept float32 whatever the model's dtype (see _float32_grids).
        self.register_buffer("reference", reference_points(samples, samples), persistent=False)
        self.register_buffer("query_grid", reference_points(fmap, fmap).view(-1, 2),
                             persistent=False)
        # Offsets are scaled to at most offset_range_factor sample cells, (y, x). A buffer, so
        # that a forward pass makes no host-to-device copy (and can be captured as a graph).
        self.register_buffer("offset_range", torch.tensor([1.0 / samples, 1.0 / samples]),
                             persistent=False)

    def _apply(self, fn, recurse=True):
        # Positions are computed in float32 even in a half-precision model: in fp16 a
        # normalised coordinate near 1 is off by up to 5e-4, and the bias table spans only
        # 2H - 1 cells, so the error would show in the attention logits.
        super()._apply(fn, recurse)
        self.reference = self.reference.float()
        self.query_grid = self.query_grid.float()
        self.offset_range = self.offset_range.float()
        return self

    def sampling_positions(self, q: torch.Tensor) -> torch.Tensor:
        """Deformed sampling points (B * groups, Hk, Wk, 2), (y, x) in [-1, 1], float32."""
        B, H, W, _ = q.shape
        q_groups = q.permute(0, 3, 1, 2).reshape(B * self.groups, self.group_channels, H, W)
        dwconv, norm, act, to_offset = self.conv_offset
        hidden = act(norm(dwconv(q_groups).permute(0, 2, 3, 1)))
        offset = linear(hidden, to_offset.weight.flatten(1)).float()  # (B*g, Hk, Wk, 2)
        if self.offset_range_factor > 0:
            offset = offset.tanh().mul(self.offset_range).mul(self.offset_range_factor)
        if self.no_off:
            offset = torch.zeros_like(offset)
        if self.offset_range_factor >= 0:
            return offset + self.reference
        return (offset + self.reference).tanh()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, H, W, C) -> (out (B, H, W, C), positions, references (B, g, Hk, Wk, 2))."""
        B, H, W, C = x.shape
        g, heads, hd = self.groups, self.heads, self.head_dim
        q = _pointwise(self.proj_q, x)
        pos = self.sampling_positions(q)
        hk, wk = pos.shape[1], pos.shape[2]

        # Both samplings run in float32: a half-precision grid misplaces samples by a visible
        # fraction of a pixel, and CPU bf16 grid sampling can return NaN.
        features = x.permute(0, 3, 1, 2).reshape(B * g, self.group_channels, H, W).float()
        pos_xy = pos.flip(-1)  # both samplings take (x, y) grids
        sampled = sample_keys_values(features, pos_xy).to(x.dtype)
        sampled = sampled.reshape(B, C, hk * wk).transpose(1, 2)  # (B, Ns, C)
        k = _pointwise(self.proj_k, sampled).view(B, -1, heads, hd).transpose(1, 2)
        v = _pointwise(self.proj_v, sampled).view(B, -1, heads, hd).transpose(1, 2)
        q = q.view(B, H * W, heads, hd).transpose(1, 2)

        bias = None
        if self.rpe_table is not None:
            table = self.rpe_table.float().expand(B, -1, -1, -1)
            table = table.reshape(B * g, heads // g, 2 * H - 1, 2 * W - 1)
            # Flipped and halved before the broadcast (halving is exact in binary floating
            # point): one pass over the (B * g, H * W, Ns, 2) displacements instead of three.
            # The query grid is laid out over the samples first, so that both operands' last
            # two dims are contiguous: a broadcast with an innermost size of 2 ran 8x slower
            # on CPU (2.4 against 0.3 ms per DAT-T stage-3 block at batch 8).
            queries = self.query_grid.flip(-1).mul(0.5)[None, :, None, :].expand(1, -1, hk * wk, -1)
            displacement = queries.contiguous() - pos_xy.mul(0.5).reshape(B * g, 1, hk * wk, 2)
            bias = interpolate_position_bias(table, displacement)
            bias = attention_mask(bias.reshape(B, heads, H * W, hk * wk), q)

        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, scale=self.scale,
            dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        out = self.proj_drop(_pointwise(self.proj_out, out))
        positions = pos.view(B, g, hk, wk, 2)
        return out, positions, self.reference.expand(B, g, -1, -1, -1)

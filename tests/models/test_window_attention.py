"""Window attention (L and S blocks) at any map size, as the DAT detection backbone runs it: padded
with zeros at the bottom and right to a multiple of the window, shifted-window mask built for the
padded size, cropped after; checked against a direct transcription of those steps on NCHW."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.layers import LocalAttention, ShiftWindowAttention


def _reference_window_attention(block: LocalAttention, x: torch.Tensor) -> torch.Tensor:
    """The release's steps on NCHW, written out: pad bottom/right to the window, label the
    shifted regions of the padded map, roll, attend within windows (relative position bias,
    -100 across regions), roll back, crop."""
    B, H, W, C = x.shape
    w, heads = block.window, block.heads
    shifted = isinstance(block, ShiftWindowAttention)
    t = F.pad(x.permute(0, 3, 1, 2), (0, (w - W % w) % w, 0, (w - H % w) % w))
    Hp, Wp = t.shape[2:]
    if shifted:
        s = block.shift
        labels = torch.zeros(Hp, Wp)
        bands = (slice(0, -w), slice(-w, -s), slice(-s, None))
        for n, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
            labels[rows, cols] = n
        t = torch.roll(t, (-s, -s), (2, 3))
    r1, r2 = Hp // w, Wp // w
    windows = t.reshape(B, C, r1, w, r2, w).permute(0, 2, 4, 3, 5, 1).reshape(B, r1 * r2, w * w, C)
    q, k, v = (windows @ block.proj_qkv.weight.T + block.proj_qkv.bias).chunk(3, dim=-1)
    q, k, v = (z.reshape(B, r1 * r2, w * w, heads, C // heads).transpose(2, 3) for z in (q, k, v))
    attn = (q * block.scale) @ k.transpose(-1, -2)
    cells = [(i, j) for i in range(w) for j in range(w)]
    index = torch.tensor(
        [[(a[0] - b[0] + w - 1) * (2 * w - 1) + a[1] - b[1] + w - 1 for b in cells] for a in cells]
    )
    attn = attn + block.relative_position_bias_table[index].permute(2, 0, 1)
    if shifted:
        regions = labels.reshape(r1, w, r2, w).permute(0, 2, 1, 3).reshape(r1 * r2, w * w)
        attn = attn + (regions[:, :, None] != regions[:, None, :]).float()[None, :, None] * -100.0
    out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(B, r1 * r2, w * w, C)
    out = out @ block.proj_out.weight.T + block.proj_out.bias
    out = out.reshape(B, r1, r2, w, w, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, Hp, Wp)
    if shifted:
        out = torch.roll(out, (s, s), (2, 3))
    return out[:, :, :H, :W].permute(0, 2, 3, 1)


@pytest.mark.parametrize("kind", ["L", "S"])
@pytest.mark.parametrize("size", [(8, 8), (8, 12), (6, 10), (9, 5)])
def test_window_blocks_pad_and_mask_at_any_size(kind, size):
    torch.manual_seed(0)
    if kind == "L":
        block = LocalAttention(16, 2, 4, 0.0, 0.0)
    else:
        block = ShiftWindowAttention(16, 2, 4, 0.0, 0.0, fmap=8)
    with torch.no_grad():
        block.relative_position_bias_table.normal_()  # large enough to matter
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        out, _, _ = block.eval()(x)
        want = _reference_window_attention(block, x)
    assert out.shape == x.shape
    assert (out - want).abs().max().item() < 1e-5


def test_shifted_window_masks_are_cached_per_size():
    block = ShiftWindowAttention(8, 1, 4, 0.0, 0.0, fmap=8)
    assert block.mask(8, 8) is block.attn_mask  # the classifier's, from the buffer
    other = block.mask(8, 12)
    assert other.shape == (2 * 3, 16, 16) and block.mask(8, 12) is other
    assert not any("12" in k for k in block.state_dict())  # not saved
    block.double()
    assert block.mask(8, 12).dtype == torch.float64

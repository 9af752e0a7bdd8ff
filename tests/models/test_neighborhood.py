"""Neighborhood attention: the blocked computation equals NATTEN's definition, query by query."""

from __future__ import annotations

import pytest
import torch

from models.neighborhood import (
    NeighborhoodAttention,
    blocked_neighborhood_attention,
    override,
    window_starts,
)


def natten_reference(q, k, v, rpb, kernel, scale):
    """NATTEN 0.14.6's CPU kernel, written out per query: window start and bias start as in
    natten_cpu_commons.h (dilation 1). A row of queries at a time, each query gathering its own
    keys, values and bias by those starts."""
    B, heads, H, W, d = q.shape
    r = kernel // 2

    def starts(i, length):
        window = max(i - r, 0) + (i + r >= length) * (length - i - r - 1)
        bias = r + (i < r) * (r - i) + (i + r >= length) * (length - i - 1 - r)
        return window, bias

    offsets = torch.arange(kernel)
    column_starts = torch.tensor([starts(j, W) for j in range(W)])
    key_columns = column_starts[:, 0, None] + offsets  # (W, kernel): each query's key columns
    bias_columns = column_starts[:, 1, None] + offsets
    out = torch.empty_like(q)
    for i in range(H):
        ni, pi = starts(i, H)
        # (B, heads, kernel rows, W, kernel columns, d) -> (B, heads, W, kernel * kernel, d)
        keys = (
            k[:, :, ni : ni + kernel][:, :, :, key_columns]
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(B, heads, W, -1, d)
        )
        values = (
            v[:, :, ni : ni + kernel][:, :, :, key_columns]
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(B, heads, W, -1, d)
        )
        bias = rpb[:, pi : pi + kernel][:, :, bias_columns].permute(0, 2, 1, 3).reshape(heads, W, -1)
        logits = torch.einsum("bhwd,bhwnd->bhwn", q[:, :, i] * scale, keys) + bias
        out[:, :, i] = torch.einsum("bhwn,bhwnd->bhwd", logits.softmax(-1), values)
    return out


@pytest.mark.parametrize(
    "height, width, kernel",
    [
        (7, 7, 7),  # the map is one window
        (8, 9, 7),  # one tile, keys shifted at both borders
        (14, 14, 7),  # DAT-T++ stage 3 at 224: at most 2k a side, the map is one tile
        (28, 28, 7),  # stage 2: 4 x 7 tiles, the rows' last one shifted back
        (56, 56, 7),  # stage 1: tiles that divide the map
        (15, 40, 7),  # just over 2k: tiled, both axes' last tiles shifted back
        (13, 30, 5),  # tiles that do not: the last one shifted back
        (20, 17, 3),
        (9, 9, 9),
    ],
)
def test_blocked_attention_equals_natten(height, width, kernel):
    torch.manual_seed(height * width + kernel)
    q, k, v = (torch.randn(2, 3, height, width, 8) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1)
    got = blocked_neighborhood_attention(q, k, v, rpb, kernel, 0.35)
    want = natten_reference(q, k, v, rpb, kernel, 0.35)
    assert (got - want).abs().max().item() < 1e-5


def test_a_transposed_bias_table_is_caught():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 10, 12, 8) for _ in range(3))
    rpb = torch.randn(2, 13, 13)
    want = natten_reference(q, k, v, rpb, 7, 0.35)
    wrong = blocked_neighborhood_attention(q, k, v, rpb.transpose(1, 2), 7, 0.35)
    assert (wrong - want).abs().max().item() > 1e-2


def test_window_starts_shift_inwards_at_the_borders():
    assert window_starts(10, 7) == [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]
    assert window_starts(7, 7) == [0] * 7


def test_a_map_smaller_than_the_kernel_is_padded_and_cropped_as_the_official_module():
    """nat.py pads the normalised map with zeros (right, bottom) up to the kernel, attends, crops."""
    torch.manual_seed(1)
    block = NeighborhoodAttention(16, 7, 2, 0.0).eval()
    x = torch.randn(2, 4, 5, 16)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 2, 0, 3))
    qkv = block.qkv(padded).view(2, 7, 7, 3, 2, 8).permute(3, 0, 4, 1, 2, 5)
    attended = natten_reference(qkv[0], qkv[1], qkv[2], block.rpb, 7, block.scale)
    want = block.proj(attended.permute(0, 2, 3, 1, 4).reshape(2, 7, 7, 16)[:, :4, :5])
    with torch.no_grad():
        got, _, _ = block(x)
    assert got.shape == x.shape
    assert (got - want).abs().max().item() < 1e-5


def test_the_seam_can_be_overridden():
    calls = []

    def spy(q, k, v, rpb, kernel, scale):
        calls.append((tuple(q.shape), kernel))
        return blocked_neighborhood_attention(q, k, v, rpb, kernel, scale)

    block = NeighborhoodAttention(16, 5, 2, 0.0).eval()
    with override(spy), torch.no_grad():
        block(torch.randn(1, 6, 6, 16))
    assert calls == [((1, 2, 6, 6, 8), 5)]


def test_gradients_flow_to_queries_keys_and_the_bias_table():
    block = NeighborhoodAttention(16, 3, 2, 0.0)
    with torch.inference_mode():  # layouts built under inference mode stay usable by autograd
        block(torch.randn(1, 9, 11, 16))
    out, _, _ = block(torch.randn(1, 9, 11, 16))
    out.sum().backward()
    assert block.rpb.grad is not None and block.rpb.grad.abs().sum() > 0
    assert block.qkv.weight.grad.abs().sum() > 0


def test_inference_reuses_the_bias_only_while_the_table_is_unchanged():
    torch.manual_seed(2)
    block = NeighborhoodAttention(16, 5, 2, 0.0).eval()
    x = torch.randn(1, 9, 12, 16)
    with torch.inference_mode():
        first, _, _ = block(x)
        again, _, _ = block(x)
        block.load_state_dict({**block.state_dict(), "rpb": torch.randn_like(block.rpb)})
        reloaded, _, _ = block(x)
    fresh = NeighborhoodAttention(16, 5, 2, 0.0).eval()
    fresh.load_state_dict(block.state_dict())
    with torch.no_grad():
        want, _, _ = fresh(x)
    assert torch.equal(first, again)
    assert (reloaded - first).abs().max() > 1e-3
    assert (reloaded - want).abs().max() < 1e-6


def test_a_trace_leaves_nothing_fake_in_the_caches():
    """torch.export runs the model on fake tensors; eager calls after it must get real ones."""
    torch.manual_seed(3)
    block = NeighborhoodAttention(16, 3, 2, 0.0).eval()
    x = torch.randn(1, 9, 10, 16)
    torch.export.export(block, (x,), strict=False)
    with torch.inference_mode():
        out, _, _ = block(x)
    assert type(out) is torch.Tensor
    assert (out - natten_via_module(block, x)).abs().max() < 1e-5


def natten_via_module(block: NeighborhoodAttention, x: torch.Tensor) -> torch.Tensor:
    B, H, W, C = x.shape
    qkv = block.qkv(x).view(B, H, W, 3, block.heads, C // block.heads).permute(3, 0, 4, 1, 2, 5)
    attended = natten_reference(qkv[0], qkv[1], qkv[2], block.rpb, block.kernel, block.scale)
    return block.proj(attended.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)).detach()

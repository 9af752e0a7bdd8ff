"""A D block's attention in chunks of queries gives the whole map's answer: the chunks cover
every query once, within the element budget, and the outputs match the single-chunk ones for
both kinds of position bias (table and ``log_cpb``), in inference and with autograd."""

from __future__ import annotations

import pytest
import torch

from models import deformable
from models.deformable import DeformableAttention, query_chunks


def test_chunks_cover_every_query_once_in_near_equal_parts_within_the_budget(monkeypatch):
    monkeypatch.setattr(deformable, "QUERY_CHUNK_ELEMENTS", 1000)
    chunks = query_chunks(queries=103, heads=2, samples=49)  # 10 queries per chunk at most
    assert chunks[0][0] == 0 and chunks[-1][1] == 103
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    sizes = [stop - start for start, stop in chunks]
    assert max(sizes) * 2 * 49 <= 1000 and max(sizes) - min(sizes) <= 1 and len(chunks) == 11


def test_a_map_within_the_budget_is_one_chunk_and_a_sample_row_too_large_is_one_query_each(monkeypatch):
    assert query_chunks(56 * 56, heads=2, samples=49) == [(0, 56 * 56)]  # DAT-T++ stage 1 at 224
    monkeypatch.setattr(deformable, "QUERY_CHUNK_ELEMENTS", 10)
    assert query_chunks(3, heads=2, samples=49) == [(0, 1), (1, 2), (2, 3)]


def _block(log_cpb: bool) -> DeformableAttention:
    torch.manual_seed(0)
    block = DeformableAttention(
        dim=32,
        heads=4,
        groups=2,
        fmap=16,
        stride=2,
        offset_range_factor=-1,
        use_pe=True,
        no_off=False,
        kernel=3,
        attn_drop=0.0,
        proj_drop=0.0,
        plus_plus=True,
        log_cpb=log_cpb,
    ).eval()
    if not log_cpb:
        with torch.no_grad():
            block.rpe_table.normal_(std=1.0)  # a bias that matters
    return block


@pytest.mark.parametrize("log_cpb", [False, True], ids=["table", "log_cpb"])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_attention_in_chunks_equals_the_whole_map(monkeypatch, log_cpb, grad):
    block = _block(log_cpb)
    x = torch.randn(2, 16, 16, 32, generator=torch.Generator().manual_seed(1))  # 256 queries, 64 samples
    with torch.set_grad_enabled(grad):
        whole = block(x)[0]
        monkeypatch.setattr(deformable, "QUERY_CHUNK_ELEMENTS", 4 * 64 * 40)  # 7 chunks of <= 40 queries
        assert len(query_chunks(256, 4, 64)) == 7
        chunked = block(x)[0]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    # at another size too (its grids computed on first use), against a fresh whole-map answer
    y = torch.randn(1, 12, 20, 32, generator=torch.Generator().manual_seed(2))
    with torch.set_grad_enabled(grad):
        chunked = block(y)[0]
        monkeypatch.setattr(deformable, "QUERY_CHUNK_ELEMENTS", 1 << 24)
        torch.testing.assert_close(chunked, block(y)[0], rtol=0, atol=1e-6)

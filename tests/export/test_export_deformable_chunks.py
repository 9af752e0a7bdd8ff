"""A D block's attention in chunks of queries, exported: the graph reads the bias table once
per chunk, ONNX Runtime reproduces the eager model, and no query-by-sample constant is left
for its constant folding to store in the session (at 1344 x 1344 those were gigabytes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx import export_onnx
from models import create_model, deformable
from models.deformable import DeformableAttention, query_chunks
from runtimes.manifest_fields import BatchRange
from tests.helpers.tiny import TINY_PP_CONFIG

pytestmark = pytest.mark.slow

# stage 1 of the tiny DAT++ at 64: 16 x 16 queries, 2 x 2 samples, 1 head
STAGE1_QUERIES, STAGE1_SAMPLES = 256, 4


def _d_block_shapes(model) -> list[tuple[int, int, int]]:
    """(heads, queries, samples) of each D block, from one forward's hooks."""
    shapes = []

    def record(module, args, out):
        _, h, w, _ = args[0].shape
        positions = out[1]
        shapes.append((module.heads, h * w, positions.shape[2] * positions.shape[3]))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, DeformableAttention)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    return shapes


def test_chunked_d_blocks_export_exactly_and_leave_no_displacement_constant(monkeypatch, tmp_path):
    torch.manual_seed(0)
    model = create_model(dict(TINY_PP_CONFIG), pretrained=False)
    for module in model.modules():  # a bias that matters
        if isinstance(module, DeformableAttention):
            with torch.no_grad():
                module.rpe_table.normal_(std=1.0)
    monkeypatch.setattr(deformable, "QUERY_CHUNK_ELEMENTS", 300)  # stage 1: 4 chunks of 64 queries
    shapes = _d_block_shapes(model)
    assert shapes[0] == (1, STAGE1_QUERIES, STAGE1_SAMPLES)
    chunks = [len(query_chunks(q, h, s)) for h, q, s in shapes]
    assert chunks[0] == 4

    path = tmp_path / "model.onnx"
    export_onnx(model, path, batch=BatchRange(1, 2, 2))
    graph = onnx.load(path)
    reads = [n for n in graph.graph.node if n.op_type == "GridSample" and "/bias_interpolation/" in n.name]
    assert len(reads) == sum(chunks)

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    folded = onnx.load(tmp_path / "optimized.onnx", load_external_data=False).graph.initializer
    displacement_like = [
        t.name for t in folded if list(t.dims[-2:]) == [STAGE1_SAMPLES, 2] and len(t.dims) == 4
    ]
    assert not displacement_like

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)

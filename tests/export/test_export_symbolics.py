"""Our seam translations and the export-time op policy, on small tensors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from export import symbolics
from export.node_names import name_nodes
from export.trace_policy import ExportPolicy
from models import sampling

# torch.export's own pytree deprecation notice; not ours to act on.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")


class _Seams(torch.nn.Module):
    """Both seams side by side, as the model calls them."""

    def forward(self, source, grid, table, displacement):
        return (
            sampling.sample_keys_values(source, grid),
            sampling.interpolate_position_bias(table, displacement),
        )


def _export(module, inputs, path, mode: str, opset: int = 18):
    batch = torch.export.Dim("batch", min=1, max=16)
    with symbolics.opaque_seams():
        program = torch.export.export(module, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=opset,
        verbose=False,
        custom_translation_table=symbolics.translation_table(mode, opset),
    )
    name_nodes(onnx_program.model)
    onnx_program.save(str(path))
    return onnx.load(path)


def _inputs(batch: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(batch, 6, 5, 7, generator=g)
    grid = torch.rand(batch, 3, 4, 2, generator=g) * 2.6 - 1.3  # some points outside [-1, 1]
    grid[0, 0, 0] = torch.tensor([1.0, -1.0])  # exactly on the corners
    grid[0, 0, 1] = torch.tensor([-1.0, 1.0])
    table = torch.randn(batch, 2, 9, 9, generator=g)
    displacement = torch.rand(batch, 12, 5, 2, generator=g) * 2 - 1
    return tuple(t.to(dtype) for t in (source, grid, table, displacement))


@pytest.mark.parametrize("mode", ["native", "decomposed"])
def test_translation_matches_grid_sample(mode, tmp_path):
    graph = _export(_Seams(), _inputs(2), tmp_path / "seams.onnx", mode)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("GridSample") == (2 if mode == "native" else 0)
    session = ort.InferenceSession(str(tmp_path / "seams.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch in (1, 3, 5):  # none of them the traced batch
        inputs = _inputs(batch, seed=batch)
        want = [
            F.grid_sample(s, g, mode="bilinear", padding_mode="zeros", align_corners=True)
            for s, g in (inputs[:2], inputs[2:])
        ]
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        for w, o in zip(want, got):
            assert o.shape == tuple(w.shape)
            np.testing.assert_allclose(o, w.numpy(), atol=1e-5, rtol=0)


def test_seam_nodes_are_named_after_the_seam(tmp_path):
    graph = _export(_Seams(), _inputs(2), tmp_path / "seams.onnx", "decomposed")
    names = [n.name for n in graph.graph.node if n.op_type == "Gather"]
    assert any(name.startswith("deformable_kv/") for name in names)
    assert any(name.startswith("bias_interpolation/") for name in names)
    all_names = [n.name for n in graph.graph.node]
    assert len(all_names) == len(set(all_names))


def test_half_inputs_sample_in_float32(tmp_path):
    class Half(torch.nn.Module):
        def forward(self, source, grid):
            return sampling.sample_keys_values(source.half(), grid.half())

    inputs = _inputs(2)[:2]
    graph = _export(Half(), inputs, tmp_path / "half.onnx", "native")
    grid_sample = next(n for n in graph.graph.node if n.op_type == "GridSample")
    inferred = onnx.shape_inference.infer_shapes(graph)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert types[grid_sample.input[0]] == onnx.TensorProto.FLOAT
    assert inferred.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_native_grid_sample_refused_from_opset_20():
    symbolics.translation_table("native", 18)
    with pytest.raises(ValueError, match="linear"):
        symbolics.translation_table("native", 20)
    assert symbolics.translation_table("decomposed", 20)
    with pytest.raises(ValueError):
        symbolics.translation_table("bicubic", 18)


def test_custom_ops_run_eagerly():
    source, grid = _inputs(2)[:2]
    expected = sampling.bilinear_grid_sample(source, grid)
    torch.testing.assert_close(torch.ops.dat.sample_kv(source, grid), expected)
    torch.testing.assert_close(torch.ops.dat.interp_bias(source, grid), expected)


@pytest.mark.parametrize("fp32_islands", [False, True])
def test_policy_attention_matches_sdpa(fp32_islands):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    mask = torch.randn(1, 3, 10, 10, generator=g)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    with ExportPolicy(fp32_islands=fp32_islands):
        got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        with pytest.raises(NotImplementedError):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_policy_keeps_half_layer_norm_in_float32():
    norm = torch.nn.LayerNorm(16).half()
    x = (torch.randn(4, 16) * 30).half()
    with ExportPolicy(fp32_islands=True):
        out = norm(x)
    assert out.dtype == torch.float16
    want = F.layer_norm(x.float(), (16,), norm.weight.float(), norm.bias.float())
    torch.testing.assert_close(out.float(), want, atol=2e-3, rtol=0)

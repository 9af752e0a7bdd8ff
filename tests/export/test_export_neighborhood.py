"""The neighborhood attention seam: its custom op, and our ONNX translation against the eager
attention (itself checked query by query against NATTEN in tests/models/test_neighborhood.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import symbolics
from export.neighborhood_translation import NEIGHBORHOOD_TILE, NeighborhoodPlan
from export.node_names import name_nodes
from models import neighborhood

# torch.export's own pytree deprecation notice; not ours to act on.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

SCALE = 0.35


class _Seam(torch.nn.Module):
    """The seam as an N block calls it, the bias table a weight; ``dtype`` casts q, k, v."""

    def __init__(self, heads: int, kernel: int, dtype=torch.float32):
        super().__init__()
        # std 1, not the model's 0.02: a bias read at the wrong place must show.
        self.rpb = torch.nn.Parameter(
            torch.randn(
                heads, 2 * kernel - 1, 2 * kernel - 1, generator=torch.Generator().manual_seed(kernel)
            )
        )
        self.kernel, self.dtype = kernel, dtype

    def forward(self, q, k, v):
        q, k, v = (t.to(self.dtype) for t in (q, k, v))
        return neighborhood.neighborhood_attention(q, k, v, self.rpb.to(self.dtype), self.kernel, SCALE)


def _inputs(batch: int, heads: int, height: int, width: int, seed: int, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, height, width, d, generator=g) for _ in range(3))


def _export(module, inputs, path) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1, max=16)
    with symbolics.opaque_seams():
        program = torch.export.export(module, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=18,
        verbose=False,
        custom_translation_table=symbolics.translation_table("native", 18),
    )
    name_nodes(onnx_program.model)
    onnx_program.save(str(path))
    return onnx.load(path)


def _run(path, inputs) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)})[0]


def _eager(module, inputs) -> torch.Tensor:
    with torch.no_grad():
        return neighborhood.blocked_neighborhood_attention(*inputs, module.rpb, module.kernel, SCALE)


@pytest.mark.parametrize(
    "height, width, kernel",
    [
        (14, 14, 7),  # DAT-T++ stage 3 at 224: 2 x 2 tiles, every key band shifted at a border
        (7, 7, 7),  # the map is one window: one tile, no gathers
        (13, 30, 5),  # not square; tiles that do not divide the map, the last ones shifted back
        (16, 9, 3),
    ],
)
def test_translation_matches_the_eager_attention(height, width, kernel, tmp_path):
    heads = 2
    module = _Seam(heads, kernel)
    graph = _export(module, _inputs(2, heads, height, width, seed=0), tmp_path / "nat.onnx")
    ops = [n.op_type for n in graph.graph.node]
    assert "MatMul" in ops and "Softmax" in ops
    for batch in (1, 3, 7):  # none of them the traced batch
        inputs = _inputs(batch, heads, height, width, seed=batch)
        got = _run(tmp_path / "nat.onnx", inputs)
        want = _eager(module, inputs).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_keys_outside_the_window_never_leak_in(tmp_path):
    """Keys outside a query's window with logits far above those inside: the masked softmax
    must still give them no weight (the mask floor is taken below the row's largest logit
    inside the window, not overall)."""
    heads, height, width, kernel = 1, 14, 14, 3
    module = _Seam(heads, kernel)
    _export(module, _inputs(2, heads, height, width, seed=0), tmp_path / "nat.onnx")
    q, k, v = _inputs(2, heads, height, width, seed=1)
    q = q.abs() + 1  # every query scores the loud keys high
    k[:, :, ::5, ::5] = 1e3  # some keys in every band, outside most windows
    got = _run(tmp_path / "nat.onnx", (q, k, v))
    want = _eager(module, (q, k, v)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_translation_nodes_are_named_after_the_seam(tmp_path):
    graph = _export(_Seam(2, 3), _inputs(2, 2, 9, 9, seed=0), tmp_path / "nat.onnx")
    names = [n.name for n in graph.graph.node if n.op_type != "Constant"]
    assert names and all(name.startswith("neighborhood/") for name in names), names
    assert len(names) == len(set(names))


def test_half_inputs_attend_in_float32_between_half_products(tmp_path):
    """As ExportPolicy keeps attention for half graphs: the products in float16, the bias,
    mask and softmax in float32."""
    heads, height, width, kernel = 2, 14, 14, 7
    module = _Seam(heads, kernel, dtype=torch.float16)
    graph = _export(module, _inputs(2, heads, height, width, seed=0), tmp_path / "half.onnx")
    inferred = onnx.shape_inference.infer_shapes(graph)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    nodes = {n.op_type: n for n in graph.graph.node}
    assert types[nodes["Softmax"].input[0]] == onnx.TensorProto.FLOAT
    for node in graph.graph.node:
        if node.op_type == "MatMul":
            assert [types[i] for i in node.input] == [onnx.TensorProto.FLOAT16] * 2, node.name
    assert inferred.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    inputs = _inputs(3, heads, height, width, seed=3)
    got = _run(tmp_path / "half.onnx", inputs).astype(np.float32)
    want = _eager(_Seam(heads, kernel), inputs).numpy()  # the same table, float32 throughout
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)


def test_custom_op_runs_the_blocked_attention_eagerly():
    module = _Seam(2, 5)
    q, k, v = _inputs(2, 2, 11, 6, seed=0)
    with torch.no_grad():
        got = torch.ops.dat.neighborhood_attention(q, k, v, module.rpb, 5, SCALE)
    torch.testing.assert_close(got, _eager(module, (q, k, v)), atol=0, rtol=0)


def test_opaque_seams_route_neighborhood_attention_through_the_op():
    module = _Seam(2, 3)
    inputs = _inputs(2, 2, 5, 5, seed=0)
    with symbolics.opaque_seams():
        program = torch.export.export(module, inputs)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "dat.neighborhood_attention.default" in targets
    # nothing of the blocked computation was traced around it
    assert not any("scaled_dot_product" in t or "index_select" in t for t in targets), targets


def test_plan_indices_are_those_of_the_blocked_layout():
    """The translation's constants against the layout eager mode attends with, same tiles."""
    height, width, kernel, tile = 13, 30, 5, NEIGHBORHOOD_TILE
    plan = NeighborhoodPlan(height, width, kernel, tile)
    layout = neighborhood.layout(height, width, kernel, torch.device("cpu"), tile)
    np.testing.assert_array_equal(plan.queries, layout.queries.numpy())
    np.testing.assert_array_equal(plan.keys, layout.keys.numpy())
    side = 2 * kernel - 1
    index = plan.row_relative[:, None, :, None, :, None] * side + plan.col_relative[None, :, None, :, None, :]
    inside = np.isfinite(plan.row_mask + plan.col_mask)
    shape = layout.mask.shape
    inside = inside.reshape(shape)
    np.testing.assert_array_equal(inside, np.isfinite(layout.mask.numpy()))
    np.testing.assert_array_equal(index.reshape(shape)[inside], layout.bias_index.numpy()[inside])

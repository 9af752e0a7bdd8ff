"""The official 'mini' DAT (2 D blocks) exported both ways reproduces the official logits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from runtimes.manifest import Manifest

pytestmark = pytest.mark.slow

SEAM_NODES = {
    f"stages.{s}.attns.1/{seam}/GridSample"
    for s in (2, 3)
    for seam in ("deformable_kv", "bias_interpolation")
}


def tile(x: torch.Tensor, batch: int) -> torch.Tensor:
    """The rows of ``x`` repeated to ``batch`` rows: (2, ...) -> (batch, ...)."""
    reps = -(-batch // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch]


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def _official_parity(path, expected, tolerance: float) -> None:
    for batch in (1, 2, 7):
        x = tile(expected["input"], batch).numpy()
        want = tile(expected["logits"], batch).numpy()
        got = _run(path, x)
        assert got.shape == want.shape
        error = np.abs(got - want).max()
        assert error <= tolerance, f"batch {batch}: max abs error {error:.3g}"
        assert (got.argmax(1) == want.argmax(1)).all()


def test_native_graph_pins_one_grid_sample_per_seam(mini_native):
    graph = onnx.load(mini_native / "model.onnx")
    assert graph.opset_import[0].version == 18
    samples = [n for n in graph.graph.node if n.op_type == "GridSample"]
    assert len(samples) == 4  # two D blocks, two seams each
    assert {n.name for n in samples} == SEAM_NODES
    for node in samples:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"mode": b"bilinear", "padding_mode": b"zeros", "align_corners": 1}
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 224, 224]


def test_native_reproduces_official_logits(mini_native, mini):
    _official_parity(mini_native / "model.onnx", mini["expected"], 1e-4)


def test_native_manifest(mini_native, mini_model):
    m = Manifest.load(mini_native)
    assert m.status == "ok" and m.precision == "fp32" and m.opset == 18
    assert m.artifacts["onnx"].grid_sample == "native" and m.engine_path is None
    assert (m.input_name, m.output_name, m.input_dtype) == ("images", "logits", "float32")
    assert m.input.shape == ("batch", 3, 224, 224) and m.output.shape == ("batch", 10)
    assert (m.batch.min, m.batch.opt, m.batch.max) == (1, 2, 8)
    assert m.preprocessing == mini_model.info.preprocessing
    assert list(m.labels) == mini_model.info.labels
    assert m.model_config == mini_model.config.to_dict()
    ort_report = m.verification["onnxruntime"]
    assert ort_report["passed"] and ort_report["checker"] == "ok"
    assert [r["batch"] for r in ort_report["results"]] == [1, 2, 7, 8]
    assert ort_report["max_abs_error"] < 1e-4


def test_cli_decomposed_export(mini_decomposed_cli, mini):
    out, done = mini_decomposed_cli
    assert done.returncode == 0, done.stderr
    assert "Exporting ONNX (decomposed" in done.stdout and "done in" in done.stdout
    assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()
    graph = onnx.load(out / "model.onnx")
    ops = [n.op_type for n in graph.graph.node]
    assert "GridSample" not in ops
    gathers = [n.name for n in graph.graph.node if n.op_type == "Gather"]
    for stage in (2, 3):
        for seam in ("deformable_kv", "bias_interpolation"):
            assert any(name.startswith(f"stages.{stage}.attns.1/{seam}/") for name in gathers)
    m = Manifest.load(out)
    assert m.grid_sample == "decomposed" and m.artifacts["onnx"].grid_sample == "decomposed"
    _official_parity(out / "model.onnx", mini["expected"], 1e-4)


def test_fp16_graph_runs_with_top1_agreement(mini_fp16, mini):
    m = Manifest.load(mini_fp16)
    assert m.precision == "fp16" and m.input_dtype == "float32"
    graph = onnx.load(m.onnx_path)
    types = {onnx.TensorProto.DataType.Name(t.data_type) for t in graph.graph.initializer}
    assert "FLOAT16" in types
    io = [v.type.tensor_type.elem_type for v in (*graph.graph.input, *graph.graph.output)]
    assert io == [onnx.TensorProto.FLOAT] * 2
    expected = mini["expected"]
    for batch in (1, 2, 7):
        got = _run(m.onnx_path, tile(expected["input"], batch).numpy())
        want = tile(expected["logits"], batch).numpy()
        assert (got.argmax(1) == want.argmax(1)).all()
        assert np.abs(got - want).max() < 1e-2
    assert m.verification["onnxruntime"]["passed"]


def test_fp16_keeps_precision_critical_ops_in_float32(mini_fp16):
    graph = onnx.shape_inference.infer_shapes(onnx.load(mini_fp16 / "model.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.graph.value_info, *graph.graph.input)}
    types.update({t.name: t.data_type for t in graph.graph.initializer})
    assert {n.name for n in graph.graph.node if n.op_type == "GridSample"} == SEAM_NODES
    for node in graph.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "GridSample"):
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
        if node.op_type == "MatMul":
            assert types[node.input[0]] == onnx.TensorProto.FLOAT16, node.name

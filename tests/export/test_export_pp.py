"""DAT++ exported: the official 'mini' DAT++ (N and D blocks) reproduces the official logits
through ONNX Runtime in float32 and float16 graphs, and a tiny DAT++ with other kernels (one
map padded up to its kernel), served at another size than its config's img_size, is exported,
verified, built and written for Triton at that size."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import Preprocessing
from models.registry import _REGISTRY, ModelSpec
from runtimes.manifest import Manifest
from runtimes.manifest_fields import BatchRange
from tests.helpers.tiny import TINY_PP_CONFIG

pytestmark = pytest.mark.slow

N_BLOCKS = {f"stages.{s}.attns.0" for s in (0, 1, 2)}
D_BLOCKS = {
    "stages.0.attns.1",
    "stages.1.attns.1",
    "stages.2.attns.1",
    "stages.3.attns.0",
    "stages.3.attns.1",
}


def tile(x: torch.Tensor, batch: int) -> np.ndarray:
    """The rows of ``x`` repeated to ``batch`` rows."""
    reps = -(-batch // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].numpy()


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def _blocks(graph: onnx.ModelProto, seam: str) -> set[str]:
    return {n.name.split(f"/{seam}/")[0] for n in graph.graph.node if f"/{seam}/" in n.name}


def test_every_n_block_is_translated_and_named(pp_export):
    graph = onnx.load(pp_export / "model.onnx")
    assert _blocks(graph, "neighborhood") == N_BLOCKS
    assert _blocks(graph, "deformable_kv") == _blocks(graph, "bias_interpolation") == D_BLOCKS
    assert not [n for n in graph.graph.node if n.domain == "dat" or "neighborhood" in n.op_type]
    for block in N_BLOCKS:
        ops = {n.op_type for n in graph.graph.node if n.name.startswith(f"{block}/neighborhood/")}
        assert {"Gather", "MatMul", "Softmax"} <= ops
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 224, 224]


def test_reproduces_the_official_logits(pp_export, pp_fixture):
    expected = pp_fixture["expected"]
    for batch in (1, 2, 7):
        got = _run(pp_export / "model.onnx", tile(expected["input"], batch))
        want = tile(expected["logits"], batch)
        assert got.shape == want.shape
        error = np.abs(got - want).max()
        assert error <= 1e-4, f"batch {batch}: max abs error {error:.3g}"
        assert (got.argmax(1) == want.argmax(1)).all()


def test_manifest_states_the_verification(pp_export, pp_fixture):
    m = Manifest.load(pp_export)
    assert m.model_name == "dat_pp_mini" and m.status == "ok" and m.precision == "fp32"
    assert m.model_config["plus_plus"] is True
    assert m.input.shape == ("batch", 3, 224, 224) and m.output.shape == ("batch", 10)
    report = m.verification["onnxruntime"]
    assert report["passed"] and report["checker"] == "ok"
    assert [r["batch"] for r in report["results"]] == [1, 2, 7, 8]
    assert report["max_abs_error"] < 1e-4


def test_fp16_graph_keeps_attention_in_float32_and_the_official_answers(pp_fp16, pp_fixture):
    m = Manifest.load(pp_fp16)
    assert m.precision == "fp16" and m.verification["onnxruntime"]["passed"]
    graph = onnx.shape_inference.infer_shapes(onnx.load(m.onnx_path))
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.graph.value_info, *graph.graph.input)}
    types.update({t.name: t.data_type for t in graph.graph.initializer})
    attention = [n for n in graph.graph.node if "/neighborhood/" in n.name]
    assert _blocks(graph, "neighborhood") == N_BLOCKS
    for node in attention:
        if node.op_type == "Softmax":
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
        if node.op_type == "MatMul":
            assert [types[i] for i in node.input] == [onnx.TensorProto.FLOAT16] * 2, node.name
    expected = pp_fixture["expected"]
    tolerance = 1e-2 * max(1.0, float(expected["logits"].abs().max()))  # the pipeline's fp16 rule
    for batch in (1, 2, 7):
        got = _run(m.onnx_path, tile(expected["input"], batch))
        want = tile(expected["logits"], batch)
        assert np.abs(got - want).max() <= tolerance
        assert (got.argmax(1) == want.argmax(1)).all()


# dat_pp_base_384's case, small: tables built at img_size 64, served at 96. Other kernels too: 5
# at stage 1 (24x24, tiles that do not divide it) and stage 2 (12x12, the last tile shifted
# back), 7 at stage 3, whose 6x6 map the N block pads to 7x7.
TINY_PP_AT_96 = {**TINY_PP_CONFIG, "nat_ksizes": [5, 5, 7, 7]}


def test_a_tiny_dat_pp_served_at_another_size_than_img_size(monkeypatch, tmp_path, fake_tensorrt):
    """The graph, its verification, the TensorRT profile (through the test double on a fake
    GPU) and the Triton repository all use the served size, 96; decomposed sampling."""
    from export.options import ExportOptions
    from export.pipeline import run_export
    from export.triton import write_repository
    from models import DATConfig

    monkeypatch.setitem(
        _REGISTRY,
        "tiny_pp_at_96",
        ModelSpec(
            DATConfig.from_mapping(TINY_PP_AT_96),
            Preprocessing(96, crop_pct=1.0),
            labels=lambda: tuple("abcdefghij"),
        ),
    )
    torch.manual_seed(0)
    m = run_export(
        ExportOptions(
            out=tmp_path / "export",
            model="tiny_pp_at_96",
            random_weights=True,
            batch=BatchRange(1, 2, 8),
            grid_sample="decomposed",
        ),
        log=lambda line: None,
    )
    assert m.model_config["img_size"] == 64 and m.preprocessing.input_size == 96
    assert m.input.shape == ("batch", 3, 96, 96)
    for runtime in ("onnxruntime", "tensorrt"):
        report = m.verification[runtime]
        assert report["passed"] and [r["batch"] for r in report["results"]] == [1, 2, 7, 8], report
        assert report["max_abs_error"] < 1e-4
    assert fake_tensorrt.called("IOptimizationProfile.set_shape") == [
        ("IOptimizationProfile.set_shape", "images", (1, 3, 96, 96), (2, 3, 96, 96), (8, 3, 96, 96))
    ]
    graph = onnx.load(m.onnx_path)
    assert _blocks(graph, "neighborhood") == N_BLOCKS
    assert "GridSample" not in {n.op_type for n in graph.graph.node}
    # stage 3's 6x6 map is padded to the 7x7 kernel, attended, and cropped
    assert any(n.op_type == "Pad" and n.name.startswith("stages.2.attns.0/") for n in graph.graph.node)
    folder = write_repository(m, tmp_path / "triton")
    config = (folder / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "max_batch_size: 8" in config
    assert "dims: [ 3, 96, 96 ]" in config
    assert (folder / "1" / "model.plan").read_bytes() == m.engine_path.read_bytes()


def test_cli_writes_a_triton_repository_from_the_export(pp_export, export_cli, tmp_path):
    done = export_cli("--out", str(pp_export), "--triton", str(tmp_path), "--triton-only")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "dat_pp_mini"
    config = (folder / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 8" in config
    assert "dims: [ 3, 224, 224 ]" in config and "dims: [ 10 ]" in config
    assert (folder / "1" / "model.onnx").read_bytes() == (pp_export / "model.onnx").read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == list(Manifest.load(pp_export).labels)

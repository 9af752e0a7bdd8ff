"""TensorRT: profile shapes and the auto fallback rule with a fake builder; a real engine on a
GPU with TensorRT (marked gpu, skipped elsewhere)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from export import tensorrt as trt_export
from export.verification import BatchResult, Verification
from models import DETECTION
from runtimes import tensorrt as trt_runtime
from runtimes.manifest import Manifest
from runtimes.manifest_fields import BatchRange
from runtimes.tensorrt import EngineError, EngineRunner
from tests.helpers.paths import REPO


def _verification(passed: bool) -> Verification:
    error = 1e-6 if passed else 0.5
    return Verification(
        runtime="tensorrt",
        artifact="model.plan",
        precision="fp32",
        tolerance_rule="max_abs_error <= 0.0001",
        results=[BatchResult(1, error, 1.0 if passed else 0.0, 1e-4, passed)],
    )


class FakeBuilder:
    """Records builds; ``fail_build``/``fail_parity`` name the grid-sample modes that fail."""

    def __init__(self, tmp_path: Path, fail_build=(), fail_parity=()):
        self.tmp_path, self.fail_build, self.fail_parity = tmp_path, fail_build, fail_parity
        self.built: list[str] = []

    def onnx_for(self, mode: str) -> Path:
        return self.tmp_path / f"{mode}.onnx"

    def build(self, onnx_path: Path, engine_path: Path) -> Path:
        mode = onnx_path.stem
        self.built.append(mode)
        if mode in self.fail_build:
            raise trt_export.EngineBuildError(f"cannot build {mode}")
        engine_path.write_text(mode)
        return engine_path

    def verify(self, engine_path: Path) -> Verification:
        return _verification(engine_path.read_text() not in self.fail_parity)

    def run(self, requested: str, first: str = "native") -> trt_export.EngineResult:
        return trt_export.build_verified(
            requested,
            first,
            onnx_for=self.onnx_for,
            engine_for=lambda m: self.tmp_path / "model.plan",
            build=self.build,
            verify=self.verify,
            log=lambda line: None,
        )


def test_profile_shapes():
    shapes = trt_export.profile_shapes(BatchRange(1, 8, 32), 224)
    assert shapes == {"min": (1, 3, 224, 224), "opt": (8, 3, 224, 224), "max": (32, 3, 224, 224)}


def test_modes_to_try():
    assert trt_export.modes_to_try("auto", "native") == ["native", "decomposed"]
    assert trt_export.modes_to_try("auto", "decomposed") == ["decomposed"]
    assert trt_export.modes_to_try("native", "native") == ["native"]
    assert trt_export.modes_to_try("decomposed", "decomposed") == ["decomposed"]


def test_auto_keeps_a_native_engine_that_passes(tmp_path):
    fake = FakeBuilder(tmp_path)
    result = fake.run("auto")
    assert fake.built == ["native"] and result.chosen.grid_sample == "native"


def test_auto_rebuilds_from_decomposed_when_native_fails_parity(tmp_path):
    fake = FakeBuilder(tmp_path, fail_parity=("native",))
    result = fake.run("auto")
    assert fake.built == ["native", "decomposed"]
    assert result.passed and result.chosen.grid_sample == "decomposed"
    assert not result.attempts[0].passed and result.attempts[0].engine is None
    assert (tmp_path / "model.plan").read_text() == "decomposed"


def test_auto_rebuilds_from_decomposed_when_native_does_not_build(tmp_path):
    fake = FakeBuilder(tmp_path, fail_build=("native",))
    result = fake.run("auto")
    assert result.chosen.grid_sample == "decomposed"
    assert "cannot build native" in result.attempts[0].error


def test_explicit_mode_does_not_fall_back_and_leaves_no_wrong_engine(tmp_path):
    fake = FakeBuilder(tmp_path, fail_parity=("native",))
    result = fake.run("native")
    assert fake.built == ["native"] and not result.passed
    assert not (tmp_path / "model.plan").exists()


def test_everything_failing_is_reported(tmp_path):
    fake = FakeBuilder(tmp_path, fail_parity=("native", "decomposed"))
    result = fake.run("auto")
    assert not result.passed and len(result.attempts) == 2
    assert all(a.to_dict()["passed"] is False for a in result.attempts)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_unavailable_reason_without_tensorrt():
    assert "tensorrt" in trt_runtime.unavailable_reason()


def test_pipeline_engine_fallback_with_a_fake_tensorrt(monkeypatch, tmp_path, small_config_file):
    """The whole export with TensorRT faked: the native engine fails parity, the manifest then
    lists an engine built from the decomposed graph exported for it. The graphs and their ONNX
    Runtime check are stand-ins too (real ones: test_export_onnx, test_export_cli)."""
    from export import pipeline, validate
    from export.onnx import OnnxExport
    from export.options import ExportOptions

    exported = []

    def export_onnx(model, path, *, grid_sample, precision, opset, batch):
        Path(path).write_bytes(f"{grid_sample} graph".encode())
        exported.append(grid_sample)
        size, shapes = model.input_size, {"logits": ["batch", model.num_classes]}
        return OnnxExport(
            Path(path), grid_sample, precision, opset, batch, ["batch", 3, size, size], shapes, {}
        )

    def verify_onnx(path, model, *, precision, **kwargs):
        return Verification(
            "onnxruntime",
            Path(path).name,
            precision,
            "max_abs_error <= 0.0001",
            "ok",
            [BatchResult(1, 1e-7, 1.0, 1e-4, True)],
        )

    monkeypatch.setattr(pipeline.onnx_export, "export_onnx", export_onnx)
    monkeypatch.setattr(validate, "verify_onnx", verify_onnx)
    built = []

    def build_engine(onnx_path, engine_path, **kwargs):
        assert kwargs["batch"] == BatchRange(1, 2, 4) and kwargs["image_size"] == 32
        built.append(Path(onnx_path).name)
        Path(engine_path).write_bytes(Path(onnx_path).read_bytes()[:64])
        return Path(engine_path)

    def verify_engine(engine_path, model, **kwargs):
        return _verification(passed=len(built) > 1)

    monkeypatch.setattr(trt_runtime, "unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_runtime, "tensorrt_version", lambda: "11.0-fake")
    monkeypatch.setattr(trt_export, "build_engine", build_engine)
    monkeypatch.setattr(trt_export, "verify_engine", verify_engine)
    monkeypatch.setattr(pipeline.torch.cuda, "get_device_name", lambda *a: "fake GPU")
    out = tmp_path / "out"
    pipeline.run_export(
        ExportOptions(out=out, config=small_config_file, random_weights=True, batch=BatchRange(1, 2, 4)),
        log=lambda line: None,
    )
    assert built == ["model.onnx", "model.decomposed.onnx"] and exported == ["native", "decomposed"]
    m = Manifest.load(out)
    assert m.artifacts["onnx"].grid_sample == "native"
    assert m.artifacts["engine"].grid_sample == "decomposed"
    assert m.artifacts["engine"].source == "model.decomposed.onnx"
    assert m.artifacts["engine_onnx"].file == "model.decomposed.onnx"
    assert m.engine_path == out / "model.plan" and m.engine_info["device"] == "fake GPU"
    assert [a["grid_sample"] for a in m.verification["tensorrt_attempts"]] == ["native", "decomposed"]
    assert m.verification["tensorrt"]["passed"] and m.tools["tensorrt"] == "11.0-fake"


@pytest.mark.gpu
def test_real_engine_matches_pytorch(mini, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    from export.options import ExportOptions
    from export.pipeline import run_export

    m = run_export(
        ExportOptions(
            out=tmp_path,
            config=mini["config"],
            checkpoint=mini["checkpoint"],
            batch=BatchRange(1, 2, 8),
            engine=True,
        ),
        log=print,
    )
    assert m.engine_path is not None and m.engine_path.is_file()
    report = m.verification["tensorrt"]
    assert report["passed"] and report["max_abs_error"] < 1e-4


@pytest.mark.gpu
def test_real_detector_engine_keeps_pytorchs_detections(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    from export.options import ExportOptions
    from export.pipeline import run_export

    scenes = sorted(str(p) for p in (REPO / "samples").glob("scene_*.png"))
    m = run_export(
        ExportOptions(
            out=tmp_path,
            model="dat_digits_detector",
            batch=BatchRange(1, 2, 8),
            engine=True,
            verify_images=tuple(scenes),
        ),
        log=print,
    )
    assert m.engine_path is not None and m.engine_path.is_file() and m.task is DETECTION
    report = m.verification["tensorrt"]
    assert report["passed"] and report["top1_agreement"] == 1.0
    assert sum(r["detections"] for r in report["results"]) > 0


# ---------------------------------------------------------------- TensorRT 10 contract tests
# export/tensorrt.py and the runner it verifies with (runtimes/tensorrt.py) against the TensorRT
# test double (tests/helpers/fake_tensorrt.py) on a fake GPU: every call they make is one the documented
# TensorRT 10 Python API has, with the arguments it takes.


@pytest.fixture
def tiny_onnx(tiny_engine_export) -> Path:
    return tiny_engine_export / "model.onnx"  # batch 1-4, native GridSample


@pytest.fixture
def tiny_model_module(tiny_engine_export):
    """The PyTorch model that graph was exported from."""
    from models import create_model, load_checkpoint

    model = create_model(str(tiny_engine_export.parent / "tiny.json"), pretrained=False)
    load_checkpoint(model, tiny_engine_export.parent / "tiny.safetensors")
    return model.eval()


def test_build_engine_makes_the_calls_tensorrt_10_documents(fake_tensorrt, tiny_onnx, tmp_path):
    trt = fake_tensorrt.module
    engine = trt_export.build_engine(
        tiny_onnx,
        tmp_path / "model.plan",
        input_name="images",
        batch=BatchRange(1, 2, 4),
        image_size=32,
        workspace_gb=0.5,
    )
    assert engine == tmp_path / "model.plan" and engine.stat().st_size > 0
    assert fake_tensorrt.called("Builder.create_network") == [
        ("Builder.create_network", 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    ]
    assert fake_tensorrt.called("OnnxParser.parse_from_file") == [
        ("OnnxParser.parse_from_file", str(tiny_onnx))
    ]
    assert fake_tensorrt.called("IBuilderConfig.set_memory_pool_limit") == [
        ("IBuilderConfig.set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 1 << 29)
    ]
    assert fake_tensorrt.called("IBuilderConfig.clear_flag") == [
        ("IBuilderConfig.clear_flag", trt.BuilderFlag.TF32)
    ]
    assert fake_tensorrt.called("IOptimizationProfile.set_shape") == [
        ("IOptimizationProfile.set_shape", "images", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    ]
    # strongly typed, TF32 off: the build saw what the exporter asked for
    assert fake_tensorrt.called("Builder.build_serialized_network") == [
        ("Builder.build_serialized_network", 2, [])
    ]


def test_engine_runner_answers_as_the_onnx_graph(
    fake_tensorrt, fake_cuda, tiny_onnx, tiny_model_module, tmp_path
):
    import numpy as np
    import onnxruntime as ort

    engine = trt_export.build_engine(
        tiny_onnx, tmp_path / "model.plan", input_name="images", batch=BatchRange(1, 2, 4), image_size=32
    )
    run = EngineRunner(engine, "images", ["logits"])
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    (logits,) = run(x)
    want = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[
        0
    ]
    assert logits.dtype == np.float32 and np.array_equal(logits, want)
    assert fake_tensorrt.executed == [{"images": [3, 3, 32, 32]}] and set(fake_cuda.devices) == {"cuda"}
    with pytest.raises(RuntimeError, match="batch 5 is outside the engine's profile"):
        run(np.zeros((5, 3, 32, 32), np.float32))
    fake_tensorrt.execute_fails = True
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        run(x)
    report = trt_export.verify_engine(
        engine,
        tiny_model_module,
        input_name="images",
        output_names=["logits"],
        precision="fp32",
        batch_sizes=[1, 2],
    )
    assert not report.passed and "execute_async_v3 failed" in report.error
    fake_tensorrt.execute_fails = False
    report = trt_export.verify_engine(
        engine,
        tiny_model_module,
        input_name="images",
        output_names=["logits"],
        precision="fp32",
        batch_sizes=[1, 2, 4],
    )
    assert report.passed and report.max_abs_error < 1e-4, report.summary()


def test_engine_build_and_load_failures_are_engine_build_errors(
    fake_tensorrt, fake_cuda, tiny_onnx, tmp_path, tiny_model_module
):
    build = dict(input_name="images", batch=BatchRange(1, 2, 4), image_size=32)
    fake_tensorrt.parse_errors = ["Unsupported operator GridSample"]
    with pytest.raises(
        trt_export.EngineBuildError, match="could not parse model.onnx: In node -1: Unsupported"
    ):
        trt_export.build_engine(tiny_onnx, tmp_path / "a.plan", **build)
    fake_tensorrt.parse_errors = []
    fake_tensorrt.build_fails = True
    with pytest.raises(trt_export.EngineBuildError, match="could not build an engine from model.onnx"):
        trt_export.build_engine(tiny_onnx, tmp_path / "a.plan", **build)
    fake_tensorrt.build_fails = False
    # A profile for a tensor the graph does not have leaves its input without one: no engine.
    with pytest.raises(trt_export.EngineBuildError, match="could not build"):
        trt_export.build_engine(tiny_onnx, tmp_path / "a.plan", **{**build, "input_name": "pixels"})
    engine = trt_export.build_engine(tiny_onnx, tmp_path / "a.plan", **build)
    with pytest.raises(EngineError, match="engine tensors are"):
        EngineRunner(engine, "images", ["scores"])
    (tmp_path / "junk.plan").write_bytes(b"not a plan")
    with pytest.raises(EngineError, match="could not load junk.plan"):
        EngineRunner(tmp_path / "junk.plan", "images", ["logits"])
    report = trt_export.verify_engine(
        tmp_path / "junk.plan",
        tiny_model_module,
        input_name="images",
        output_names=["logits"],
        precision="fp32",
        batch_sizes=[1],
    )
    assert not report.passed and report.runtime == "tensorrt" and "could not load" in report.error


def test_unavailable_reason_and_version_with_the_double(monkeypatch, fake_tensorrt):
    import sys

    import torch

    assert trt_runtime.unavailable_reason() is None
    assert trt_runtime.tensorrt_version() == fake_tensorrt.version
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trt_runtime.unavailable_reason() == "no CUDA GPU is visible to PyTorch"

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: ImportError
    assert trt_runtime.unavailable_reason() == "the tensorrt Python package is not installed"
    assert trt_runtime.tensorrt_version() is None
    monkeypatch.delitem(sys.modules, "tensorrt")
    import builtins

    real_import = builtins.__import__

    def importing(name, *args, **kwargs):  # an install without libnvinfer fails to import otherwise
        if name == "tensorrt":
            raise OSError("libnvinfer.so.10: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)
    assert trt_runtime.unavailable_reason() == (
        "tensorrt cannot be imported (OSError: libnvinfer.so.10: cannot open shared object file)"
    )


def test_the_pipeline_builds_verifies_and_records_an_engine(tiny_engine_export):
    """The session export of tests/conftest.py: run_export with the double, nothing else faked."""
    m = Manifest.load(tiny_engine_export)
    assert m.engine_path == tiny_engine_export / "model.plan" and m.engine_info["device"] == "Fake GPU"
    report = m.verification["tensorrt"]
    assert (
        report["passed"]
        and report["max_abs_error"] < 1e-4
        and [r["batch"] for r in report["results"]] == [1, 2, 4]
    )
    assert m.tools["tensorrt"] == "10.13.0.fake" and m.artifacts["engine"].grid_sample == "native"

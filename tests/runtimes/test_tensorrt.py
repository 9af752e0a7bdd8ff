"""The TensorRT engine runner against the TensorRT 10 test double on a fake GPU
(tests/helpers/fake_tensorrt.py): what it reads from an engine, how it runs tensors, and how it
refuses. The export and serving contract tests (tests/export/test_export_tensorrt.py,
tests/service/test_gpu_contract.py) run it too, as the exporter and the server use it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from runtimes.tensorrt import EngineError, EngineRunner, import_problem


@pytest.fixture
def engine(tiny_engine_export):
    return tiny_engine_export / "model.plan"  # batch 1-4, 32 px, made by the same double


def test_the_runner_reads_the_profile_and_runs_tensors_on_the_named_gpu(
    fake_tensorrt, fake_cuda, engine, tiny_engine_export
):
    runner = EngineRunner(engine, "images", ["logits"], device="cuda:0")
    assert (runner.input_shape, runner.max_batch, runner.fixed_batch) == ((-1, 3, 32, 32), 4, None)
    assert runner.input_dtype == torch.float32 and runner.output_dtypes == [torch.float32]
    assert fake_cuda.set_devices == [0] and runner.device == "cuda:0"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (from_tensor,) = runner(x)
    (from_numpy,) = runner(x.numpy())
    assert from_tensor.shape == (2, 10) and np.array_equal(from_tensor, from_numpy)
    assert set(fake_cuda.devices) == {"cuda:0"}
    # every execution waits for the device's current stream, then runs on the runner's own
    own = [s for s in fake_cuda.streams if s.synchronized]
    assert len(own) == 1 and len(own[0].waited) == 2


def test_a_fixed_batch_engine_says_so(fake_tensorrt, fake_cuda, engine):
    def fixed(header: dict) -> None:
        header["inputs"][0]["shape"][0] = 4

    fake_tensorrt.edit_engine = fixed
    runner = EngineRunner(engine, "images", ["logits"])
    assert (runner.input_shape[0], runner.max_batch, runner.fixed_batch) == (4, 4, 4)
    assert fake_cuda.set_devices == []  # "cuda": the current GPU, none made current
    with pytest.raises(EngineError, match=r"refused input shape \(3, 3, 32, 32\)"):
        runner(np.zeros((3, 3, 32, 32), np.float32))


def test_a_half_output_comes_back_as_float32(fake_tensorrt, fake_cuda, engine):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (want,) = EngineRunner(engine, "images", ["logits"])(x)

    def half(header: dict) -> None:
        header["outputs"][0]["dtype"] = "HALF"

    fake_tensorrt.edit_engine = half
    runner = EngineRunner(engine, "images", ["logits"])
    assert runner.output_dtypes == [torch.float16]
    (got,) = runner(x)
    assert got.dtype == np.float32 and np.allclose(got, want, rtol=1e-3, atol=1e-3)


def test_unsupported_io_types_are_refused(fake_tensorrt, fake_cuda, engine):
    def int8(header: dict) -> None:
        header["inputs"][0]["dtype"] = "INT8"

    fake_tensorrt.edit_engine = int8
    with pytest.raises(EngineError, match=r"unsupported TensorRT I/O type DataType\.INT8"):
        EngineRunner(engine, "images", ["logits"])


def test_without_tensorrt_or_off_the_gpu_the_runner_refuses(monkeypatch, fake_cuda, engine):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert import_problem() == "the tensorrt Python package is not installed"
    with pytest.raises(EngineError, match="cannot be loaded: the tensorrt Python package is not installed"):
        EngineRunner(engine, "images", ["logits"])
    from tests.helpers.fake_tensorrt import FakeTensorRT

    FakeTensorRT().install(monkeypatch)
    with pytest.raises(EngineError, match="run on a CUDA device, not on cpu"):
        EngineRunner(engine, "images", ["logits"], device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="run on a CUDA device, not on cuda"):
        EngineRunner(engine, "images", ["logits"])

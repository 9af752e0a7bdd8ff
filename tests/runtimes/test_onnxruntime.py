"""The ONNX Runtime session factory: providers per device, options, and its refusals (the CUDA
build through the test double of tests/helpers/fake_onnxruntime.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from runtimes.onnxruntime import (
    CPU,
    CUDA,
    ERRORS_ONLY,
    SessionError,
    create_session,
    has_cuda_provider,
    providers,
    runtime_summary,
)


@pytest.fixture
def graph(tiny_engine_export):
    return tiny_engine_export / "model.onnx"


def test_a_cpu_session_with_its_options(graph):
    session = create_session(graph, threads=1, quiet=True)
    options = session.get_session_options()
    assert session.get_providers() == [CPU]
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.log_severity_level == ERRORS_ONLY
    (logits,) = session.run(None, {"images": np.zeros((2, 3, 32, 32), np.float32)})
    assert logits.shape == (2, 10)
    assert create_session(graph).get_session_options().log_severity_level != ERRORS_ONLY


def test_providers_per_device(fake_cuda):
    both = [CUDA, CPU]
    assert providers("cpu", both) == [CPU]
    assert providers("cuda:1", both) == [(CUDA, {"device_id": 1}), CPU]
    fake_cuda.current = 2
    assert providers("cuda", both) == [(CUDA, {"device_id": 2}), CPU]  # the current GPU
    with pytest.raises(SessionError, match="install onnxruntime-gpu"):
        providers("cuda:0", [CPU])
    with pytest.raises(SessionError, match="cpu or cuda devices, not on mps"):
        providers("mps", both)


def test_the_cuda_build_gets_the_named_gpu(fake_onnxruntime_gpu, graph):
    assert has_cuda_provider()
    create_session(graph, device="cuda:0")
    assert fake_onnxruntime_gpu.sessions[-1]["providers"] == [(CUDA, {"device_id": 0}), CPU]


def test_a_cuda_provider_that_does_not_start_is_an_error(monkeypatch, fake_cuda, graph):
    from tests.helpers.fake_onnxruntime import FakeOnnxRuntime

    FakeOnnxRuntime(cuda_starts=False).install(monkeypatch)
    with pytest.raises(SessionError, match="could not start its CUDA provider"):
        create_session(graph, device="cuda:0")


def test_without_onnxruntime(monkeypatch, graph):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert runtime_summary() is None and not has_cuda_provider()
    with pytest.raises(SessionError, match="onnxruntime is not installed"):
        create_session(graph)

"""Fixtures shared by every test folder: the official references, exports made once, small
models and the GPU test doubles (their code: tests/helpers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.paths import FIXTURES, official_fixture
from tests.helpers.tiny import TINY_CONFIG


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def anyio_backend() -> str:
    """The service and the bench's client are asyncio code; trio (which selenium installs)
    would otherwise add a variant of every async test."""
    return "asyncio"


@pytest.fixture(scope="session")
def mini_fixture() -> dict:
    """The official DAT v1 'mini' reference: config (a ``MODEL.DAT`` mapping), checkpoint path
    and expected outputs."""
    fixture = official_fixture("dat_v1_mini")
    return {**fixture, "config": json.loads(fixture["config"].read_text())["config"]}


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    return _shapes("official_dat_v1_state_dict_shapes.json")


@pytest.fixture(scope="session")
def official_pp_shapes() -> dict:
    """Keys and shapes of the four released DAT++ classifiers, with their official configs."""
    return _shapes("official_dat_pp_state_dict_shapes.json")


def _shapes(name: str) -> dict:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def pp_fixture() -> dict:
    """The official DAT++ classifier reference (``dat_pp_mini``), run on NATTEN's own kernels."""
    return official_fixture("dat_pp_mini")


@pytest.fixture(scope="session")
def pp_det_fixture() -> dict:
    """The official DAT-Detection backbone reference (``dat_pp_det_mini``), 256x352 input."""
    return official_fixture("dat_pp_det_mini")


# Batch range of the DAT++ fixture's export: 1, 2 and 7 are verified, 8 keeps it quick.
PP_BATCH = (1, 2, 8)


@pytest.fixture(scope="session")
def pp_export(pp_fixture, tmp_path_factory) -> Path:
    """``dat_pp_mini`` exported once by the real pipeline (fp32, native GridSample, no engine),
    for the export tests and the service's ONNX Runtime backend alike."""
    from export.options import ExportOptions
    from export.pipeline import run_export
    from runtimes.manifest_fields import BatchRange

    out = tmp_path_factory.mktemp("pp-export")
    run_export(
        ExportOptions(
            out=out,
            config=pp_fixture["config"],
            checkpoint=pp_fixture["checkpoint"],
            name="dat_pp_mini",
            batch=BatchRange(*PP_BATCH),
            grid_sample="native",
            engine=False,
        ),
        log=lambda line: None,
    )
    return out


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    from models import create_model

    return create_model(TINY_CONFIG)


# -- GPU code paths on the CPU (tests/helpers/fake_*.py) -------------------------------------------


@pytest.fixture
def fake_cuda(monkeypatch):
    """One fake GPU: torch.cuda answers as on a GPU host, CUDA tensors live in CPU memory."""
    from tests.helpers.fake_cuda import FakeCuda

    return FakeCuda(monkeypatch, count=1)


@pytest.fixture
def fake_tensorrt(monkeypatch, fake_cuda):
    """A TensorRT 10 test double importable as ``tensorrt`` (with a fake GPU: engines need one)."""
    from tests.helpers.fake_tensorrt import FakeTensorRT

    fake = FakeTensorRT()
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def fake_onnxruntime_gpu(monkeypatch, fake_cuda):
    """onnxruntime as onnxruntime-gpu presents it, recording each session's providers."""
    from tests.helpers.fake_onnxruntime import FakeOnnxRuntime

    fake = FakeOnnxRuntime()
    fake.install(monkeypatch)
    return fake


@pytest.fixture(scope="session")
def tiny_engine_export(tmp_path_factory) -> Path:
    """The tiny DAT exported by the real pipeline with a TensorRT engine, built and verified
    through the TensorRT test double on a fake GPU (batch range 1-4). Beside the export folder:
    ``tiny.json`` and ``tiny.safetensors``, the config and weights it was exported from."""
    from export.options import ExportOptions
    from export.pipeline import run_export
    from models import create_model, save_safetensors
    from runtimes.manifest_fields import BatchRange
    from tests.helpers.fake_cuda import FakeCuda
    from tests.helpers.fake_tensorrt import FakeTensorRT

    root = tmp_path_factory.mktemp("tiny-engine")
    config = root / "tiny.json"
    config.write_text(json.dumps({"config": TINY_CONFIG}))
    torch.manual_seed(0)
    save_safetensors(create_model(TINY_CONFIG), root / "tiny.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        FakeCuda(mp)
        FakeTensorRT().install(mp)
        run_export(
            ExportOptions(
                out=root / "export",
                config=config,
                checkpoint=root / "tiny.safetensors",
                batch=BatchRange(1, 2, 4),
                grid_sample="native",
            ),
            log=lambda line: None,
        )
    return root / "export"

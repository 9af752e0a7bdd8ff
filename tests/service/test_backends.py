"""Backends behind one interface: torch, ONNX Runtime on a real ``export`` artifact, TensorRT
isolated (it cannot be installed here: a clear error, never an import failure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import DETECTION, INSTANCE_SEGMENTATION, save_safetensors
from service import Settings
from service.backends import BackendError, create_backend
from service.backends import auto as auto_backend
from service.backends.auto import FirstThatLoads, ensure_export
from service.backends.base import run_in_chunks
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.tensorrt import TensorRTBackend, tensorrt_available
from service.backends.torch import TorchBackend
from tests.helpers.app import served
from tests.helpers.images import sample_png
from tests.helpers.tiny import TINY_CONFIG

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="session")
def exported(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """The tiny model's weights, config and a verified ONNX export of them, made once per run
    through the CPU-default export cache (its cache-miss path)."""
    root = tmp_path_factory.mktemp("export")
    config = root / "tiny.json"
    config.write_text(json.dumps({"config": TINY_CONFIG}))
    weights = root / "tiny.safetensors"
    save_safetensors(tiny_model, weights)
    labels = root / "labels.txt"
    labels.write_text("\n".join(tiny_model.info.labels) + "\n")
    cache = root / "cache"
    artifacts = ensure_export(str(config), checkpoint=weights, labels=labels, cache_dir=cache, max_batch=8)
    assert artifacts.parent == cache and [p.name for p in cache.iterdir()] == [artifacts.name]
    return {"config": config, "weights": weights, "labels": labels, "artifacts": artifacts, "cache": cache}


@pytest.mark.slow
@pytest.mark.anyio
async def test_onnxruntime_serves_the_export_with_the_same_answers_as_torch(exported):
    images = [sample_png(i) for i in range(3)]
    torch_backend = TorchBackend(
        str(exported["config"]),
        checkpoint=exported["weights"],
        labels=exported["labels"],
        device="cpu",
        precision="fp32",
    )
    ort_backend = create_backend(Settings(artifacts=exported["artifacts"], device="cpu"))
    assert isinstance(ort_backend, OnnxRuntimeBackend)  # auto + artifacts, no TensorRT here
    answers = {}
    for backend in (torch_backend, ort_backend):
        async with served(backend, max_batch_size=16, max_images_per_request=16) as client:
            # 11 images: more than the export's verified batch range (8), so it runs in chunks
            many = await client.post(
                "/classify",
                params={"top_k": 10},
                files=[("files", (f"{i}.png", images[i % 3], "image/png")) for i in range(11)],
            )
            models = (await client.get("/models")).json()["models"][0]
        assert many.status_code == 200, many.text
        answers[backend.name] = many.json()
        assert models["backend"] == backend.name and models["num_labels"] == 10
    a, b = answers["torch"], answers["onnxruntime"]
    # the same weights report the same version whichever backend serves them
    assert a["model"]["version"] == b["model"]["version"] != "untrained"
    assert a["model"]["name"] == b["model"]["name"] == "tiny"
    for ra, rb in zip(a["results"], b["results"], strict=True):
        assert [p["index"] for p in ra["predictions"]] == [p["index"] for p in rb["predictions"]]
        pa = [p["probability"] for p in ra["predictions"]]
        pb = [p["probability"] for p in rb["predictions"]]
        assert pa == pytest.approx(pb, abs=1e-5)


@pytest.mark.slow
@pytest.mark.anyio
async def test_onnxruntime_refuses_points_and_mismatches(exported):
    backend = OnnxRuntimeBackend(exported["artifacts"], device="cpu")
    async with served(backend) as client:
        response = await client.post("/classify?points=true", content=sample_png(0), headers=PNG)
    assert response.status_code == 422
    assert "not available with the onnxruntime backend" in response.json()["error"]["message"]
    with pytest.raises(BackendError, match="exported as fp32"):
        OnnxRuntimeBackend(exported["artifacts"], precision="bf16").load()


def test_tampered_or_missing_artifacts_are_clear_errors(exported, tmp_path):
    with pytest.raises(BackendError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "nowhere").load()
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in exported["artifacts"].iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes()[:-10])
    with pytest.raises(BackendError, match="sha256"):
        OnnxRuntimeBackend(copy).load()


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_tensorrt_without_the_library_is_a_clear_error(exported):
    backend = create_backend(Settings(backend="tensorrt", artifacts=exported["artifacts"]))
    assert isinstance(backend, TensorRTBackend)
    with pytest.raises(BackendError, match="tensorrt"):
        backend.load()


def test_torch_backend_precisions_and_devices(tiny_model):
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA is not available"):
            TorchBackend(tiny_model, device="cuda")
    with pytest.raises(BackendError, match="device must be"):
        TorchBackend(tiny_model, device="tpu")
    x = torch.zeros(2, 3, 32, 32)
    fp32 = TorchBackend(tiny_model, device="cpu", precision="fp32")
    fp32.load()
    bf16 = TorchBackend(tiny_model, device="cpu", precision="bf16")
    bf16.load()
    a, b = fp32.run(x), bf16.run(x, points=True)
    assert len(a) == len(b) == 2 and a[0].points is None and len(b[0].points) == 2
    assert np.abs(a[0].logits - b[0].logits).max() < 0.5
    assert fp32.describe()["precision"] == "fp32" and bf16.describe()["precision"] == "bf16"


def test_torch_compile_is_for_cuda_graphs_and_leaves_a_cpu_model_eager(tiny_model, monkeypatch):
    seen = {}

    class Recording(TorchBackend):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("service.backends.torch.TorchBackend", Recording)
    create_backend(Settings(model="dat_digits", backend="torch", device="cpu", torch_compile=True))
    assert seen["compile"] is True and seen["cuda_graphs"] is True
    compiled = TorchBackend(tiny_model, device="cpu", cuda_graphs=True, compile=True)
    compiled.load()
    compiled.warmup([1, 2])  # eager: no compile, no graphs on the CPU
    assert compiled.describe()["compiled_batch"] is None and compiled.describe()["cuda_graphs"] is None


def _auto_settings(exported, **kw) -> Settings:
    return Settings(
        model=str(exported["config"]),
        checkpoint=exported["weights"],
        labels=exported["labels"],
        export_cache=exported["cache"],
        max_batch_size=8,
        device="cpu",
        **kw,
    )


@pytest.mark.slow
def test_cpu_default_serves_the_cached_export_with_onnxruntime(exported, monkeypatch):
    monkeypatch.setattr(auto_backend, "ONNX_ON_CPU", frozenset({str(exported["config"])}))
    backend = create_backend(_auto_settings(exported))
    assert isinstance(backend, FirstThatLoads)
    meta = backend.load()  # a cache hit: no second export
    assert backend.name == "onnxruntime" and not backend.supports_points
    assert meta.name == "tiny" and len(meta.labels) == 10
    assert [p.name for p in exported["cache"].iterdir()] == [exported["artifacts"].name]
    assert len(backend.run(torch.zeros(3, 3, 32, 32))) == 3
    # not for other models, nor when asked for torch precisions or disabled
    assert isinstance(create_backend(Settings(model="dat_tiny", device="cpu")), TorchBackend)
    assert isinstance(create_backend(_auto_settings(exported, precision="bf16")), TorchBackend)
    assert isinstance(create_backend(_auto_settings(exported, auto_export=False)), TorchBackend)


def test_cpu_default_falls_back_to_torch_when_the_export_fails(exported, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(auto_backend, "ONNX_ON_CPU", frozenset({str(exported["config"])}))
    monkeypatch.setattr(auto_backend, "ensure_export", broken)
    backend = create_backend(_auto_settings(exported))
    backend.load()
    assert backend.name == "torch" and backend.supports_points
    assert backend.describe()["backend"] == "torch"


def test_chunks_respect_a_static_or_maximum_batch():
    seen = []

    def run(chunk):
        seen.append(chunk.shape[0])
        return [chunk[:, 0, 0, 0].numpy()[:, None], -chunk[:, 0, 0, 0].numpy()]

    x = torch.arange(7, dtype=torch.float32).reshape(7, 1, 1, 1)
    first, second = run_in_chunks(run, x, max_batch=3)
    assert seen == [3, 3, 1] and first.ravel().tolist() == list(range(7))
    assert second.tolist() == [-i for i in range(7)]  # every output comes back whole
    seen.clear()
    first, _ = run_in_chunks(run, x, max_batch=None, fixed=4)
    assert seen == [4, 4] and first.ravel().tolist() == list(range(7))


@pytest.mark.parametrize(
    "name, task",
    [("dat_pp_tiny_mask_rcnn_1x", INSTANCE_SEGMENTATION), ("dat_pp_tiny_retinanet_1x", DETECTION)],
)
def test_a_release_detector_loads_with_its_task_and_keep_ratio_inputs(name, task):
    meta = TorchBackend(name, device="cpu").load()
    assert meta.task is task and meta.keeps_ratio and meta.input_size is None
    assert meta.max_detections == 100 and meta.labels[0] == "person" and meta.category_ids[-1] == 90

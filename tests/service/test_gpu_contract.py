"""The GPU serving paths, run on the CPU through test doubles (tests/helpers/fake_*.py): the settings
compose and Kubernetes use (``DAT_DEVICE=cuda``) load a TensorRT engine and answer requests;
ONNX Runtime is given the CUDA provider on the GPU the settings name. CI has no GPU and no
TensorRT, so without these the first run of this code would be on a GPU host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service import Settings, create_app
from service.backends import BackendError, create_backend
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.tensorrt import TensorRTBackend, tensorrt_available
from tests.helpers.app import serve
from tests.helpers.images import sample_png

PNG = {"content-type": "image/png"}


def compose_settings(monkeypatch, artifacts, **env: str) -> Settings:
    """The server's settings as docker-compose.yml and deploy/k8s set them (environment only)."""
    values = {
        "DAT_DEVICE": "cuda",
        "DAT_ARTIFACTS": str(artifacts),
        "DAT_BACKEND": "auto",
        "DAT_DETECTOR": "none",
        "DAT_MAX_BATCH_SIZE": "8",
        "DAT_PREPROCESS_WORKERS": "2",
        **env,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.anyio
async def test_compose_settings_start_and_serve_a_tensorrt_engine(
    monkeypatch, fake_tensorrt, fake_cuda, tiny_engine_export
):
    settings = compose_settings(monkeypatch, tiny_engine_export)
    async with serve(create_app(settings)) as client:
        models = (await client.get("/models")).json()["models"][0]
        assert (models["backend"], models["device"], models["engine_max_batch"]) == ("tensorrt", "cuda:0", 4)
        six = await client.post(
            "/classify",
            params={"top_k": 10},
            files=[("files", (f"{i}.png", sample_png(i), "image/png")) for i in range(6)],
        )
        assert six.status_code == 200, six.text
        assert (await client.get("/health/ready")).status_code == 200
    assert settings.device == "cuda:0"  # normalised once: every backend gets an indexed device
    assert fake_cuda.set_devices == [0] and set(fake_cuda.devices) == {"cuda:0"}
    # 6 images, the engine's profile ends at 4: two executions, each with its own shapes
    executed = [shapes["images"][0] for shapes in fake_tensorrt.executed]
    assert executed[-2:] == [4, 2]
    assert sorted(set(executed[:-2])) == [1, 2, 3, 4]  # warm-up: every batch size up to 8, chunked
    # The engine's answers are the ONNX graph's: the data went in and came out where TensorRT put it.
    cpu = OnnxRuntimeBackend(tiny_engine_export, device="cpu")
    cpu.load()
    from service.preprocess import prepare, stack

    inputs = stack([prepare(sample_png(i), cpu.meta.preprocessing, 10**7) for i in range(6)])
    want = np.stack([o.logits for o in cpu.run(inputs)])
    got = six.json()["results"]
    for row, result in zip(want, got, strict=True):
        probabilities = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        by_index = {p["index"]: p["probability"] for p in result["predictions"]}
        assert [by_index[i] for i in range(10)] == pytest.approx(probabilities.tolist(), abs=1e-6)


def test_every_backend_gets_the_normalised_device(monkeypatch, fake_tensorrt, tiny_engine_export):
    settings = compose_settings(monkeypatch, tiny_engine_export, DAT_BACKEND="tensorrt")
    backend = create_backend(settings)
    meta = backend.load()
    out = backend.run(torch.zeros(3, 3, meta.input_size, meta.input_size))
    assert len(out) == 3 and out[0].logits.shape == (10,)
    assert isinstance(backend, TensorRTBackend) and backend.device == "cuda:0"
    assert backend.describe()["device"] == "cuda:0"
    # the calls TensorRT saw, in order: engine, context, then per run shape, addresses, execute
    names = [c[0] for c in fake_tensorrt.calls]
    assert names[:3] == ["Logger", "Runtime", "Runtime.deserialize_cuda_engine"]
    run = names[names.index("IExecutionContext.set_input_shape") :]
    assert run == [
        "IExecutionContext.set_input_shape",
        "IExecutionContext.set_tensor_address",
        "IExecutionContext.set_tensor_address",
        "IExecutionContext.execute_async_v3",
    ]
    assert fake_tensorrt.called("IExecutionContext.set_input_shape")[0][1:] == ("images", (3, 3, 32, 32))
    torch_backend = create_backend(
        compose_settings(monkeypatch, tiny_engine_export, DAT_BACKEND="torch", DAT_MODEL="dat_digits")
    )
    assert torch_backend.device == "cuda:0"


def test_the_second_gpu_is_used_when_named(monkeypatch, tiny_engine_export):
    from tests.helpers.fake_cuda import FakeCuda
    from tests.helpers.fake_tensorrt import FakeTensorRT

    cuda = FakeCuda(monkeypatch, count=2)
    trt = FakeTensorRT()
    trt.install(monkeypatch)
    backend = create_backend(compose_settings(monkeypatch, tiny_engine_export, DAT_DEVICE="cuda:1"))
    backend.load()
    backend.run(torch.zeros(1, 3, 32, 32))
    assert cuda.set_devices == [1] and set(cuda.devices) == {"cuda:1"}
    assert {s.device for s in cuda.streams} == {torch.device("cuda:1")}


def test_onnxruntime_gets_the_cuda_provider_on_the_named_gpu(
    monkeypatch, fake_onnxruntime_gpu, tiny_engine_export
):
    fake_cuda_count = torch.cuda.device_count()
    assert fake_cuda_count == 1
    settings = compose_settings(monkeypatch, tiny_engine_export, DAT_BACKEND="onnxruntime")
    backend = create_backend(settings)
    assert isinstance(backend, OnnxRuntimeBackend)
    meta = backend.load()
    assert fake_onnxruntime_gpu.sessions[-1]["providers"] == [
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    assert backend.device == "cuda:0" and backend.describe()["device"] == "cuda:0"
    assert len(backend.run(torch.zeros(2, 3, meta.input_size, meta.input_size))) == 2


def test_onnxruntime_that_cannot_start_cuda_is_a_clear_error(monkeypatch, fake_cuda, tiny_engine_export):
    from tests.helpers.fake_onnxruntime import FakeOnnxRuntime

    FakeOnnxRuntime(cuda_starts=False).install(monkeypatch)
    backend = OnnxRuntimeBackend(tiny_engine_export, device="cuda:0")
    with pytest.raises(BackendError, match="could not start its CUDA provider"):
        backend.load()


def test_onnxruntime_without_the_cuda_provider_says_what_to_install(fake_cuda, tiny_engine_export):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this venv has onnxruntime-gpu (the gpu extra)")
    backend = OnnxRuntimeBackend(tiny_engine_export, device="cuda:0")
    with pytest.raises(BackendError, match="install onnxruntime-gpu"):
        backend.load()


def test_tensorrt_is_available_only_with_the_package_and_a_gpu(monkeypatch, fake_tensorrt):
    assert tensorrt_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not tensorrt_available()


def test_a_fixed_batch_engine_runs_padded_batches(fake_tensorrt, tiny_engine_export):
    def fixed(engine: dict) -> None:
        engine["inputs"][0]["shape"][0] = 4

    fake_tensorrt.edit_engine = fixed
    backend = TensorRTBackend(tiny_engine_export, device="cuda")
    backend.load()
    assert backend.describe()["engine_max_batch"] == 4
    dynamic = TensorRTBackend(tiny_engine_export, device="cuda")
    fake_tensorrt.edit_engine = None
    dynamic.load()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    padded = backend.run(x)
    assert fake_tensorrt.executed[-1] == {"images": [4, 3, 32, 32]} and len(padded) == 3
    plain = dynamic.run(x)
    assert all(np.allclose(a.logits, b.logits, atol=1e-5) for a, b in zip(padded, plain, strict=True))


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda e: e["outputs"][0].update(name="probabilities"),
            r"engine tensors are \['images', 'probabilities'\]; expected 'images' -> \['logits'\]",
        ),
        (
            lambda e: e["inputs"][0].update(shape=[-1, 3, 64, 64]),
            "does not match the manifest's preprocessing",
        ),
        (lambda e: e["outputs"][0].update(dtype="INT8"), r"unsupported TensorRT I/O type DataType\.INT8"),
    ],
)
def test_an_engine_that_does_not_fit_its_manifest_is_refused(fake_tensorrt, tiny_engine_export, edit, words):
    fake_tensorrt.edit_engine = edit
    with pytest.raises(BackendError, match=words):
        TensorRTBackend(tiny_engine_export, device="cuda:0").load()


def test_tensorrt_backend_failures_are_clear(fake_tensorrt, tiny_engine_export, tmp_path):
    with pytest.raises(BackendError, match="run before load"):
        TensorRTBackend(tiny_engine_export).run(torch.zeros(1, 3, 32, 32))
    with pytest.raises(BackendError, match="needs a CUDA device"):
        TensorRTBackend(tiny_engine_export, device="cpu").load()
    with pytest.raises(
        BackendError, match="precision fp16 requested but the artifacts were exported as fp32"
    ):
        TensorRTBackend(tiny_engine_export, precision="fp16").load()
    fake_tensorrt.version = "11.0.0.fake"  # the engine was built by another TensorRT
    with pytest.raises(BackendError, match="could not deserialize the engine"):
        TensorRTBackend(tiny_engine_export).load()
    fake_tensorrt.version = fake_tensorrt.module.__version__

    def min_two(engine: dict) -> None:
        engine["inputs"][0]["profile"][0][0] = 2

    fake_tensorrt.edit_engine = min_two
    backend = TensorRTBackend(tiny_engine_export)
    backend.load()
    with pytest.raises(RuntimeError, match=r"refused input shape \(1, 3, 32, 32\)"):
        backend.run(torch.zeros(1, 3, 32, 32))
    fake_tensorrt.execute_fails = True
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        backend.run(torch.zeros(2, 3, 32, 32))
    # an export without an engine (ONNX only) is not TensorRT's
    import json
    import shutil

    onnx_only = shutil.copytree(tiny_engine_export, tmp_path / "onnx-only")
    manifest = json.loads((onnx_only / "manifest.json").read_text())
    del manifest["artifacts"]["engine"]
    (onnx_only / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="names no TensorRT engine"):
        TensorRTBackend(onnx_only).load()


def _log_lines(text: str) -> list[dict]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("gpu_build", [False, True])
def test_startup_logs_the_onnxruntime_providers(monkeypatch, capsys, gpu_build):
    import service.__main__ as entry

    if gpu_build:
        from tests.helpers.fake_cuda import FakeCuda
        from tests.helpers.fake_onnxruntime import FakeOnnxRuntime

        FakeCuda(monkeypatch)
        FakeOnnxRuntime().install(monkeypatch)
    monkeypatch.setattr(entry, "serve", lambda settings: 0)  # start-up only, no server
    assert entry.main(["--detector", "none"]) == 0
    found = [r for r in _log_lines(capsys.readouterr().err) if "providers" in r]
    assert len(found) == 1, found
    want = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu_build else ["CPUExecutionProvider"]
    assert set(want) <= set(found[0]["providers"]) and found[0]["level"] == "info"
    assert all(name in found[0]["msg"] for name in want) and found[0]["version"]
    assert len(found[0]["distributions"]) == 1  # one build: the cpu or the gpu extra


def test_startup_warns_without_onnxruntime_or_with_both_builds(monkeypatch, capsys):
    import importlib.metadata
    import sys

    import service.__main__ as entry

    monkeypatch.setattr(entry, "serve", lambda settings: 0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert entry.main(["--detector", "none"]) == 0
    (line,) = [r for r in _log_lines(capsys.readouterr().err) if "onnxruntime" in r["msg"].lower()]
    assert line["level"] == "warning" and "install the cpu or the gpu extra" in line["msg"]
    monkeypatch.delitem(sys.modules, "onnxruntime")
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "1.32.0" if name == "onnxruntime-gpu" else real_version(name),
    )
    assert entry.main(["--detector", "none"]) == 0
    (line,) = [r for r in _log_lines(capsys.readouterr().err) if "providers" in r]
    assert line["level"] == "warning" and "both onnxruntime and onnxruntime-gpu are installed" in line["msg"]

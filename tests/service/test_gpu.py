"""The torch backend on CUDA: CUDA-graph replays answer as the eager model does (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.backends.torch import TorchBackend
from tests.helpers.app import served
from tests.helpers.images import sample_png

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_replays_match_the_eager_model(tiny_model, precision):
    graphs = TorchBackend(tiny_model, device="cuda", precision=precision, cuda_graphs=True)
    eager = TorchBackend(tiny_model, device="cuda", precision=precision)
    for backend in (graphs, eager):
        backend.load()
        backend.warmup(range(1, 13))
    assert graphs.describe()["cuda_graphs"] == [1, 2, 4, 8, 12]
    assert eager.describe()["cuda_graphs"] is None
    g = torch.Generator().manual_seed(0)
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    for n in (1, 3, 8, 12):  # 3: padded into the bucket of 4
        x = torch.randn(n, 3, 32, 32, generator=g)
        a, b = graphs.run(x, points=True), eager.run(x, points=True)
        for oa, ob in zip(a, b, strict=True):
            assert np.abs(oa.logits - ob.logits).max() < tolerance
            assert [(p.stage, p.block) for p in oa.points] == [(p.stage, p.block) for p in ob.points]
            for pa, pb in zip(oa.points, ob.points, strict=True):
                assert np.abs(pa.yx - pb.yx).max() < tolerance
        # the same image alone and inside a padded batch: the same answer
        alone = graphs.run(x[:1])[0].logits
        assert np.abs(alone - a[0].logits).max() < tolerance


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_replays_of_dat_plus_plus_match_the_eager_model(precision):
    """N blocks (their window layouts and biases made in the warm-up, reused by the capture)
    and DAT++ D blocks replayed as graphs."""
    from models import create_model
    from tests.helpers.tiny import TINY_PP_CONFIG

    torch.manual_seed(0)
    model = create_model(TINY_PP_CONFIG)
    graphs = TorchBackend(model, device="cuda", precision=precision, cuda_graphs=True)
    eager = TorchBackend(model, device="cuda", precision=precision)
    for backend in (graphs, eager):
        backend.load()
        backend.warmup(range(1, 5))
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    for a, b in zip(graphs.run(x, points=True), eager.run(x, points=True), strict=True):
        assert np.abs(a.logits - b.logits).max() < tolerance
        assert len(a.points) == len(b.points) == 5  # the D blocks


@pytest.mark.anyio
async def test_classify_over_http_on_cuda(tiny_model):
    backend = TorchBackend(tiny_model, device="cuda", precision="fp16", cuda_graphs=True)
    async with served(backend, warmup=True, max_batch_size=8) as client:
        response = await client.post(
            "/classify?points=true",
            files=[("files", (f"{i}.png", sample_png(i), "image/png")) for i in range(3)],
        )
        models = (await client.get("/models")).json()["models"][0]
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 3 and response.json()["results"][0]["points"]
    assert models["device"].startswith("cuda") and models["cuda_graphs"] == [1, 2, 4, 8]


@pytest.mark.anyio
async def test_images_preprocessed_on_the_gpu_answer_as_pillow_preprocessed_ones(tiny_model):
    files = [
        ("files", (f"{i}.png", sample_png(i, (40 + 30 * i, 30 + 20 * i)), "image/png")) for i in range(4)
    ]
    answers = {}
    for on_gpu in (True, False):
        backend = TorchBackend(tiny_model, device="cuda", precision="fp32")
        async with served(backend, max_batch_size=8, gpu_preprocess=on_gpu) as client:
            models = (await client.get("/models")).json()["models"][0]
            response = await client.post("/classify?top_k=3", files=files)
        assert response.status_code == 200, response.text
        assert models["preprocessing_device"] == ("cuda:0" if on_gpu else "cpu")
        answers[on_gpu] = response.json()["results"]
    for gpu, cpu in zip(answers[True], answers[False], strict=True):
        assert [p["label"] for p in gpu["predictions"]] == [p["label"] for p in cpu["predictions"]]
        for a, b in zip(gpu["predictions"], cpu["predictions"], strict=True):
            assert abs(a["probability"] - b["probability"]) < 2e-2


def test_a_batch_may_mix_gpu_images_and_cpu_tensors():
    from service.batcher import _concatenate

    gpu, cpu = torch.ones(2, 3, 4, 4, device="cuda"), torch.zeros(1, 3, 4, 4)
    batch = _concatenate([cpu, gpu])
    assert batch.is_cuda and batch.shape == (3, 3, 4, 4) and batch[0].sum() == 0 and batch[1:].min() == 1


def _nvjpeg_or_skip():
    pytest.importorskip("torchvision", reason="--gpu-decode needs torchvision")


def test_nvjpeg_decodes_jpegs_as_pillow_does_within_a_few_levels():
    _nvjpeg_or_skip()
    from bench.server_cli import sample_jpeg
    from service.gpu_decode import torchvision_decoder
    from service.preprocess import decode
    from tests.helpers.images import jpeg, photo

    decoder = torchvision_decoder(torch.device("cuda"))
    for data in (sample_jpeg(), jpeg(photo(301, 203)), jpeg(photo(64, 48).convert("L"))):
        image, _ = decode(data, 10**8)
        pillow = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).int()
        nvjpeg = decoder([torch.frombuffer(bytearray(data), dtype=torch.uint8)])[0].cpu().int()
        assert nvjpeg.shape == pillow.shape
        difference = (nvjpeg - pillow).abs().float()
        # IDCT and chroma upsampling differ from libjpeg-turbo's; a swapped channel or a
        # misread colour space would be tens of levels on average
        assert difference.mean() < 2.0, (difference.mean(), difference.max())


@pytest.mark.anyio
async def test_gpu_decoded_jpegs_answer_as_pillow_decoded_ones(tiny_model):
    _nvjpeg_or_skip()
    from tests.helpers.images import jpeg, photo

    files = [
        (
            "files",
            (f"{i}.jpg", jpeg(photo(60 + 20 * i, 50 + 10 * i, seed=i), orientation=1 + i), "image/jpeg"),
        )
        for i in range(4)
    ]
    answers = {}
    for on_gpu in (True, False):
        backend = TorchBackend(tiny_model, device="cuda", precision="fp32")
        async with served(backend, max_batch_size=8, gpu_decode=on_gpu) as client:
            response = await client.post("/classify?top_k=3", files=files)
            models = (await client.get("/models")).json()["models"][0]
        assert response.status_code == 200, response.text
        assert (models["gpu_decode"]["images"] == 5) if on_gpu else models["gpu_decode"] is None
        answers[on_gpu] = response.json()["results"]
    for gpu, cpu in zip(answers[True], answers[False], strict=True):
        assert (gpu["width"], gpu["height"]) == (cpu["width"], cpu["height"])
        for a, b in zip(gpu["predictions"], cpu["predictions"], strict=True):
            assert abs(a["probability"] - b["probability"]) < 5e-2


@pytest.mark.slow  # a compile of its own (gpu_verify.sh's compiled step runs it on DAT-T)
def test_a_compiled_largest_bucket_answers_as_the_eager_model(tiny_model):
    compiled = TorchBackend(tiny_model, device="cuda", precision="fp16", cuda_graphs=True, compile=True)
    eager = TorchBackend(tiny_model, device="cuda", precision="fp16")
    for backend in (compiled, eager):
        backend.load()
        backend.warmup(range(1, 9))
    assert compiled.describe()["compiled_batch"] == 8 and compiled.describe()["cuda_graphs"] == [1, 2, 4, 8]
    g = torch.Generator().manual_seed(0)
    for n in (8, 5, 1):  # 5: padded into the compiled bucket
        x = torch.randn(n, 3, 32, 32, generator=g)
        a, b = compiled.run(x), eager.run(x)
        for oa, ob in zip(a, b, strict=True):
            assert np.abs(oa.logits - ob.logits).max() < 2e-2

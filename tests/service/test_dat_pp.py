"""DAT++ served. The official 'mini' DAT++ (N and D blocks) through the torch backend and
through ONNX Runtime on its verified export: the official logits for the fixture's tensors (v2)
and their probabilities (the backend, as /classify post-processes it), PyTorch's probabilities
for a picture through /classify, the D blocks' sampling points (N blocks have none). Then
``python -m service --model dat_pp_tiny --checkpoint FILE`` as a real process, and
dat_pp_base_384 served at 384 although its config's img_size is 224."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from models import create_model, load_checkpoint, save_safetensors
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.torch import TorchBackend
from service.postprocess import classify, softmax
from service.preprocess import prepare
from tests.helpers.app import served
from tests.helpers.images import sample_png
from tests.helpers.server import start, stop, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

MODEL = "dat_pp_mini"
TOLERANCE = 1e-4  # the export's float32 rule, for the logits of both backends
D_BLOCKS = {(0, 1): 1, (1, 1): 1, (2, 1): 2, (3, 0): 4, (3, 1): 4}  # (stage, block): groups


async def infer(client, x: np.ndarray, binary: bool) -> np.ndarray:
    """POSTs what ``tritonclient.http`` sends for one FP32 tensor; the logits it reads back."""
    tensor = triton.InferInput("images", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs)
    headers = {"Inference-Header-Content-Length": str(json_size)} if json_size is not None else {}
    response = await client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = response.headers.get("Inference-Header-Content-Length")
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length is not None else None
    )
    return result.as_numpy("logits")


@pytest.fixture(scope="module")
def config(pp_fixture, tmp_path_factory):
    """The fixture's YAML under the model's name (a config file's stem names the model)."""
    path = tmp_path_factory.mktemp("pp") / f"{MODEL}.yaml"
    shutil.copy(pp_fixture["config"], path)
    return path


@pytest.fixture(scope="module")
def reference(config, pp_fixture):
    return load_checkpoint(create_model(config), pp_fixture["checkpoint"]).eval()


@pytest.fixture(params=["torch", "onnxruntime"])
def backend(request, config, pp_fixture):
    if request.param == "torch":
        return TorchBackend(str(config), checkpoint=pp_fixture["checkpoint"], device="cpu", precision="fp32")
    return OnnxRuntimeBackend(request.getfixturevalue("pp_export"), device="cpu")


async def test_v2_tensors_give_the_official_logits(backend, pp_fixture):
    x = pp_fixture["expected"]["input"].numpy()  # (2, 3, 224, 224), already normalised
    expected = pp_fixture["expected"]["logits"].numpy()
    async with served(backend) as client:
        for binary in (True, False):
            np.testing.assert_allclose(await infer(client, x, binary), expected, atol=TOLERANCE, rtol=0)


async def test_the_official_probabilities_and_a_picture_through_classify(backend, pp_fixture, reference):
    expected = pp_fixture["expected"]
    meta = backend.load()
    assert meta.name == MODEL and meta.input_size == 224 and len(meta.labels) == 10
    # The fixture's tensors are already normalised: the backend's output, post-processed
    # as /classify does, against the official logits' probabilities.
    for output, logits in zip(backend.run(expected["input"]), expected["logits"].numpy(), strict=True):
        predictions, _ = classify(output, meta.labels, 10, with_points=False)
        want = softmax(logits)
        assert [p.index for p in predictions] == list(np.argsort(-want, kind="stable"))
        np.testing.assert_allclose(
            [p.probability for p in predictions], np.sort(want)[::-1], atol=TOLERANCE, rtol=0
        )
    # A picture through HTTP, against PyTorch on the service's own preprocessing of it.
    png = sample_png(3, size=(300, 260))
    with torch.inference_mode():
        want = softmax(reference(prepare(png, reference.info.preprocessing, 10**7).tensor[None])[0].numpy())
    async with served(backend) as client:
        response = await client.post(
            "/classify", params={"top_k": 10}, content=png, headers={"content-type": "image/png"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == MODEL and body["model"]["backend"] == backend.name
    predictions = body["results"][0]["predictions"]
    assert [p["index"] for p in predictions] == list(np.argsort(-want, kind="stable"))
    np.testing.assert_allclose(
        [p["probability"] for p in predictions], np.sort(want)[::-1], atol=TOLERANCE, rtol=0
    )


async def test_points_come_from_the_d_blocks_only(config, pp_fixture, pp_export, reference):
    png = sample_png(4, size=(224, 224))
    with torch.inference_mode():
        _, positions, _ = reference.forward_with_points(
            prepare(png, reference.info.preprocessing, 10**7).tensor[None]
        )
    backend = TorchBackend(str(config), checkpoint=pp_fixture["checkpoint"], device="cpu", precision="fp32")
    async with served(backend) as client:
        response = await client.post(
            "/classify?points=true", content=png, headers={"content-type": "image/png"}
        )
    assert response.status_code == 200, response.text
    points = response.json()["results"][0]["points"]
    assert {(p["stage"], p["block"]): p["groups"] for p in points} == D_BLOCKS
    for p in points:
        want = positions[p["stage"]][p["block"]][0].numpy()  # (groups, Hk, Wk, 2), (y, x)
        assert (p["height"], p["width"]) == want.shape[1:3]
        np.testing.assert_allclose(p["yx"], want, atol=1e-4, rtol=0)
    assert all(positions[s][0] is None for s in (0, 1, 2))  # the N blocks: none to give
    async with served(OnnxRuntimeBackend(pp_export, device="cpu")) as client:
        refused = await client.post(
            "/classify?points=true", content=png, headers={"content-type": "image/png"}
        )
    assert refused.status_code == 422


async def test_dat_pp_base_384_is_served_at_384():
    backend = TorchBackend("dat_pp_base_384", device="cpu", precision="fp32")
    async with served(backend) as client:
        models = (await client.get("/models")).json()["models"][0]
        v2 = (await client.get("/v2/models/dat_pp_base_384")).json()
    assert backend.model.config.img_size == 224
    assert models["input_size"] == 384 and models["preprocessing"]["crop_pct"] == 1.0
    assert v2["inputs"][0]["shape"] == [-1, 3, 384, 384]


@pytest.fixture(scope="module")
def dat_pp_tiny(tmp_path_factory):
    """dat_pp_tiny with seeded random weights (no release is fetched here), in a file."""
    torch.manual_seed(0)
    model = create_model("dat_pp_tiny", pretrained=False)
    path = tmp_path_factory.mktemp("dat_pp_tiny") / "dat_pp_tiny.safetensors"
    save_safetensors(model, path)
    return model, path


def test_python_m_service_serves_dat_pp_tiny(dat_pp_tiny):
    model, checkpoint = dat_pp_tiny
    process, url = start(
        "--model",
        "dat_pp_tiny",
        "--checkpoint",
        str(checkpoint),
        "--device",
        "cpu",
        "--detector",
        "none",
        "--no-warmup",
    )
    try:
        wait_ready(process, url, timeout=180)
        models = httpx.get(f"{url}/models", timeout=30).json()["models"][0]
        png = sample_png(5, size=(320, 240))
        response = httpx.post(
            f"{url}/classify",
            params={"top_k": 3, "points": "true"},
            content=png,
            headers={"content-type": "image/png"},
            timeout=120,
        )
    finally:
        stop(process)
    assert models["name"] == "dat_pp_tiny" and models["backend"] == "torch"
    assert models["input_size"] == 224 and models["num_labels"] == 1000
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    with torch.inference_mode():
        want = softmax(model(prepare(png, model.info.preprocessing, 10**7).tensor[None])[0].numpy())
    top = np.argsort(-want, kind="stable")[:3]
    assert [p["index"] for p in result["predictions"]] == list(top)
    np.testing.assert_allclose(
        [p["probability"] for p in result["predictions"]], want[top], atol=1e-6, rtol=0
    )
    # DAT-T++: one D block after each N block in stages 1-3, two in stage 4
    assert len(result["points"]) == 1 + 2 + 9 + 2

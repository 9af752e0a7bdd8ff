"""NVIDIA's own client, ``tritonclient.http`` from PyPI, against ``python -m service`` as a real
process serving the official DAT v1 'mini' fixture: health, metadata, inference with binary and
with JSON tensors (the fixture's official logits), classification, concurrent clients batched."""

from __future__ import annotations

import concurrent.futures
import shutil

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers.metrics import metric
from tests.helpers.server import start, stop, wait_ready

MODEL = "dat_v1_mini"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def server(mini_fixture, tmp_path_factory):
    """The fixture model behind a real server. A batch goes when 4 images wait (or after 3 s),
    so requests sent together share a forward pass and ones sent alone still come back."""
    from tests.helpers.paths import MINI

    config = tmp_path_factory.mktemp("v2") / f"{MODEL}.json"  # the file's stem names the model
    shutil.copy(MINI / "config.json", config)
    process, url = start(
        "--model",
        str(config),
        "--checkpoint",
        str(mini_fixture["checkpoint"]),
        "--backend",
        "torch",
        "--device",
        "cpu",
        "--no-warmup",
        "--max-batch-size",
        "4",
        "--max-images-per-request",
        "4",
        "--max-queue-delay-ms",
        "3000",
    )
    try:
        wait_ready(process, url, timeout=120)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def reference(mini_fixture):
    """The same weights in process, for inputs other than the fixture's own."""
    from models import create_model, load_checkpoint

    model = load_checkpoint(create_model(mini_fixture["config"]), mini_fixture["checkpoint"]).eval()

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return logits


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        url.removeprefix("http://"), connection_timeout=30, network_timeout=60
    )


def infer(url: str, x: np.ndarray, binary: bool, **output) -> triton.InferResult:
    tensor = triton.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary, **output)]
    with client(url) as c:
        return c.infer(MODEL, [tensor], outputs=outputs, request_id=f"{binary}-{x.shape[0]}")


def test_health_and_metadata(server):
    with client(server) as c:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready(MODEL) and c.is_model_ready(MODEL, "1")
        assert not c.is_model_ready("no_such_model")
        meta = c.get_server_metadata()
        model = c.get_model_metadata(MODEL)
        with pytest.raises(InferenceServerException, match="unknown model 'no_such_model'") as error:
            c.get_model_metadata("no_such_model")
    assert error.value.status() == "404"
    assert "binary_tensor_data" in meta["extensions"] and "classification" in meta["extensions"]
    assert model["name"] == MODEL and model["versions"] == ["1"]
    assert model["inputs"][0] == {"name": "images", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


def test_binary_and_json_tensors_give_the_official_logits(server, mini_fixture):
    x = mini_fixture["expected"]["input"].numpy()  # (2, 3, 224, 224), already normalised
    expected = mini_fixture["expected"]["logits"].numpy()
    # sent together, the two requests fill one batch of 4 and go at once
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        binary, as_json = pool.map(lambda b: infer(server, x, b), [True, False])
    for result, binary_mode in ((binary, True), (as_json, False)):
        logits = result.as_numpy("logits")
        assert logits.dtype == np.float32 and logits.shape == (2, 10)
        np.testing.assert_allclose(logits, expected, atol=TOLERANCE, rtol=0)
        assert result.get_response()["id"] == f"{binary_mode}-2"
        assert ("binary_data_size" in result.get_output("logits").get("parameters", {})) == binary_mode


def test_concurrent_clients_are_batched_and_each_gets_its_own_logits(server, mini_fixture, reference):
    base = mini_fixture["expected"]["input"].numpy()
    # four different images: the fixture's two and two variations of them
    inputs = [base[:1], base[1:], np.ascontiguousarray(base[:1, :, :, ::-1]), base[1:] * 0.5]
    before = httpx.get(f"{server}/metrics").text
    with concurrent.futures.ThreadPoolExecutor(len(inputs)) as pool:
        results = list(pool.map(lambda x: infer(server, x, True), inputs))
    after = httpx.get(f"{server}/metrics").text
    logits = [r.as_numpy("logits") for r in results]
    np.testing.assert_allclose(
        np.concatenate(logits[:2]), mini_fixture["expected"]["logits"].numpy(), atol=TOLERANCE, rtol=0
    )
    for x, got in zip(inputs, logits, strict=True):
        np.testing.assert_allclose(got, reference(x), atol=TOLERANCE, rtol=0)
    assert len({tuple(np.round(g[0], 3)) for g in logits}) == 4  # the answers really differ

    def batches(text: str, le: str | None = None) -> float:
        return metric(text, "dat_batch_size_bucket", le=le) if le else metric(text, "dat_batch_size_count")

    new_batches = batches(after) - batches(before)
    new_singles = batches(after, "1.0") - batches(before, "1.0")
    assert metric(after, "dat_batch_size_sum") - metric(before, "dat_batch_size_sum") == 4
    assert new_batches < 4 and new_singles < new_batches  # at least one batch held several clients


def test_classification_through_the_client(server, mini_fixture):
    x = mini_fixture["expected"]["input"].numpy()
    expected = mini_fixture["expected"]["logits"].numpy()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda b: infer(server, x, b, class_count=3), [True, False]))
    for result in results:
        strings = result.as_numpy("logits")
        assert strings.shape == (2, 3)
        for row, image_logits in zip(strings, expected, strict=True):
            values, indices, labels = zip(
                *((s.decode() if isinstance(s, bytes) else s).split(":") for s in row), strict=True
            )
            assert [int(i) for i in indices] == list(np.argsort(-image_logits)[:3])
            np.testing.assert_allclose(
                [float(v) for v in values], np.sort(image_logits)[::-1][:3], atol=TOLERANCE
            )
            assert list(labels) == [f"class_{i}" for i in indices]

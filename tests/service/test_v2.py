"""The Open Inference Protocol v2 in process: metadata, health, JSON and binary tensors both
ways, encoded images, classification, every malformed request, batching with /classify."""

from __future__ import annotations

import asyncio
import json
import struct

import numpy as np
import pytest
import torch
import tritonclient.http as triton

from service import create_app
from service.preprocess import prepare
from tests.service.helpers import LABELS, metric, sample_png, serve, served, settings, wait_until

pytestmark = pytest.mark.anyio

INFER = "/v2/models/dat/infer"
LENGTH = "Inference-Header-Content-Length"


def images(n: int, seed: int = 0) -> np.ndarray:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()


def expected_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def triton_request(inputs, outputs=None, **kwargs) -> tuple[bytes, dict[str, str]]:
    """A request body exactly as tritonclient.http encodes it."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs, **kwargs)
    return body, ({LENGTH: str(json_size)} if json_size is not None else {})


def post(client, inputs, outputs=None, path: str = INFER, **kwargs):
    """POSTs what tritonclient.http would send for ``client.infer(inputs, outputs, ...)``."""
    body, headers = triton_request(inputs, outputs, **kwargs)
    return client.post(path, content=body, headers=headers)


def triton_result(response) -> triton.InferResult:
    length = response.headers.get(LENGTH)
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length is not None else None
    )


def tensor_input(x: np.ndarray, binary: bool, name: str = "images") -> triton.InferInput:
    datatype = {np.float32: "FP32", np.float16: "FP16"}[x.dtype.type]
    tensor = triton.InferInput(name, list(x.shape), datatype)
    return tensor.set_data_from_numpy(x, binary_data=binary)


def raw_request(header: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), ({LENGTH: str(len(text))} if blobs else {})


def images_header(n: int = 1, size: int | None = None, datatype: str = "FP32", **extra) -> dict:
    nbytes = n * 3 * 32 * 32 * (4 if datatype == "FP32" else 2)
    tensor = {
        "name": "images",
        "datatype": datatype,
        "shape": [n, 3, 32, 32],
        "parameters": {"binary_data_size": nbytes if size is None else size},
        **extra,
    }
    return {"inputs": [tensor]}


def encoded(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# -- metadata and health -------------------------------------------------------------------


async def test_server_and_model_metadata_health_and_readiness(backend):
    async with served(backend) as client:
        server = (await client.get("/v2")).json()
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        model = await client.get("/v2/models/dat")
        version = await client.get("/v2/models/dat/versions/1")
        model_ready = await client.get("/v2/models/dat/ready")
        version_ready = await client.get("/v2/models/dat/versions/1/ready")
    assert server == {
        "name": "dat-serve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert live.status_code == ready.status_code == 200
    assert model.status_code == 200 and model.json() == version.json() == {
        "name": "dat",
        "versions": ["1"],
        "platform": "pytorch_libtorch",
        "inputs": [
            {"name": "images", "datatype": "FP32", "shape": [-1, 3, 32, 32]},
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert model_ready.status_code == version_ready.status_code == 200
    assert model_ready.json() == {"name": "dat", "ready": True}


async def test_unknown_models_and_versions_are_404_in_the_protocol_error_shape(backend):
    async with served(backend) as client:
        responses = [
            await client.get("/v2/models/nope"),
            await client.get("/v2/models/nope/ready"),
            await client.get("/v2/models/dat/versions/2"),
            await client.post("/v2/models/nope/infer", content=b"{}"),
            await client.post("/v2/models/dat/versions/7/infer", content=b"{}"),
        ]
    for response in responses:
        assert response.status_code == 404
        assert isinstance(response.json()["error"], str) and set(response.json()) == {"error"}
    assert "unknown model 'nope'" in responses[0].json()["error"]
    assert "no version '2'" in responses[2].json()["error"]


async def test_not_ready_is_503_while_loading(backend):
    backend.load_gate.clear()
    app = create_app(settings(), backend=backend)
    async with serve(app, wait_ready=False) as client:
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        model_ready = await client.get("/v2/models/dat/ready")
        infer = await client.post(INFER, content=b"{}")
        backend.load_gate.set()
        await app.state.service.wait_ready()
        after = await client.get("/v2/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reason": "the model is loading and warming up"}
    assert ready.headers["retry-after"] == "1"
    assert model_ready.status_code == infer.status_code == 503
    assert "loading" in infer.json()["error"]
    assert after.status_code == 200


# -- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
async def test_tensors_in_and_out_as_binary_or_json(backend, tiny_model, binary_in, binary_out):
    x = images(3)
    body, headers = triton_request(
        [tensor_input(x, binary_in)],
        [triton.InferRequestedOutput("logits", binary_data=binary_out)],
        request_id="req-7",
    )
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert (LENGTH.lower() in response.headers) == binary_out
    result = triton_result(response)
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_name"] == "dat"
    assert result.get_response()["model_version"] == "1"
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (3, 10)
    np.testing.assert_allclose(logits, expected_logits(tiny_model, x), atol=1e-5)
    assert backend.batches == [3]


async def test_all_outputs_in_binary_when_none_are_named(backend, tiny_model):
    """tritonclient's default: no 'outputs', binary_data_output true."""
    x = images(1)
    body, headers = triton_request([tensor_input(x, True)])
    assert b'"binary_data_output":true' in body
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
        plain = await client.post(
            INFER,
            content=raw_request(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "FP32",
                            "shape": [1, 3, 32, 32],
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
            )[0],
        )
    assert response.status_code == plain.status_code == 200
    assert (
        LENGTH.lower() in response.headers and response.headers["content-type"] == "application/octet-stream"
    )
    np.testing.assert_allclose(
        triton_result(response).as_numpy("logits"), expected_logits(tiny_model, x), atol=1e-5
    )
    # neither outputs nor binary_data_output: JSON
    assert LENGTH.lower() not in plain.headers and plain.headers["content-type"] == "application/json"
    (output,) = plain.json()["outputs"]
    assert output["shape"] == [1, 10] and len(output["data"]) == 10


async def test_json_data_may_be_nested_as_the_shape(backend, tiny_model):
    x = images(2)
    header = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 3, 32, 32], "data": x.tolist()}]}
    async with served(backend) as client:
        response = await client.post(INFER, json=header)
    assert response.status_code == 200
    logits = np.array(response.json()["outputs"][0]["data"], np.float32).reshape(2, 10)
    np.testing.assert_allclose(logits, expected_logits(tiny_model, x), atol=1e-5)


async def test_fp16_tensors_are_widened_to_float32(backend, tiny_model):
    x = images(2).astype(np.float16)
    async with served(backend) as client:
        binary = await post(client, [tensor_input(x, True)])
        as_json = await post(client, [tensor_input(x, False)])
    expected = expected_logits(tiny_model, x.astype(np.float32))
    for response in (binary, as_json):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(triton_result(response).as_numpy("logits"), expected, atol=1e-5)


async def test_encoded_images_as_bytes_go_through_the_classify_preprocessing(backend, tiny_model):
    pngs = [sample_png(1), sample_png(2)]
    tensor = triton.InferInput("image_bytes", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(pngs, dtype=np.object_))
    body, headers = triton_request([tensor], [triton.InferRequestedOutput("logits")])
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    x = torch.stack([prepare(p, tiny_model.info.preprocessing, 10**7).tensor for p in pngs]).numpy()
    np.testing.assert_allclose(
        triton_result(response).as_numpy("logits"), expected_logits(tiny_model, x), atol=1e-5
    )


async def test_bytes_input_of_shape_n_by_1(backend, tiny_model):
    pngs = [sample_png(3), sample_png(4)]
    blob = encoded(*pngs)
    body, headers = raw_request(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [2, 1],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    logits = np.array(response.json()["outputs"][0]["data"]).reshape(2, 10)
    x = torch.stack([prepare(p, tiny_model.info.preprocessing, 10**7).tensor for p in pngs]).numpy()
    np.testing.assert_allclose(logits, expected_logits(tiny_model, x), atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_classification_strings_as_triton_writes_them(backend, tiny_model, binary):
    x = images(2, seed=3)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary, class_count=3)]
    body, headers = triton_request([tensor_input(x, True)], outputs)
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
        everything = await post(
            client, [tensor_input(x, True)], [triton.InferRequestedOutput("logits", class_count=50)]
        )
    assert response.status_code == 200, response.text
    result = triton_result(response)
    strings = result.as_numpy("logits")
    assert strings.shape == (2, 3) and result.get_output("logits")["datatype"] == "BYTES"
    logits = expected_logits(tiny_model, x)
    for row, image_logits in zip(strings, logits, strict=True):
        top = np.argsort(-image_logits, kind="stable")[:3]
        # binary BYTES come back as bytes, JSON ones as str (the same as from Triton)
        assert [s.decode() if isinstance(s, bytes) else s for s in row] == [
            f"{image_logits[i]:f}:{i}:{LABELS[i]}" for i in top
        ]
    # more classes than the model has: all of them (as Triton does)
    assert triton_result(everything).as_numpy("logits").shape == (2, 10)


# -- malformed requests --------------------------------------------------------------------


def _bad_requests() -> dict[str, tuple[bytes, dict, int, str]]:
    one = images(1).tobytes()
    cases: dict[str, tuple[bytes, dict[str, str], int, str]] = {
        "not json": (b"{nope", {}, 400, "not valid JSON"),
        "empty body": (b"", {}, 400, "empty inference request"),
        "not an object": (b"[1, 2]", {}, 400, "must be a JSON object"),
        "no inputs": (b'{"inputs": []}', {}, 400, "'inputs' must be a non-empty list"),
        "NaN in JSON": (
            b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [NaN]}]}',
            {},
            400,
            "not valid JSON",
        ),
    }
    cases["wrong datatype"] = (
        *raw_request(images_header(datatype="INT32", size=len(one)), one),
        400,
        "must be FP32 or FP16",
    )
    cases["unknown datatype"] = (
        *raw_request(images_header(datatype="FP8", size=len(one)), one),
        400,
        "unknown datatype",
    )
    wrong_shape = images_header()
    wrong_shape["inputs"][0]["shape"] = [1, 3, 16, 64]
    cases["wrong shape"] = (*raw_request(wrong_shape, one), 400, "must have shape [N, 3, 32, 32]")
    zero = images_header(size=0)
    zero["inputs"][0]["shape"] = [0, 3, 32, 32]
    cases["no images"] = (*raw_request(zero), 400, "N >= 1")
    cases["byte count short"] = (
        *raw_request(images_header(size=len(one) - 4), one[:-4]),
        400,
        "needs 12288 bytes, got 12284",
    )
    cases["bytes left over"] = (
        *raw_request(images_header(size=len(one)), one, b"xx"),
        400,
        "2 bytes after the JSON header belong to no input",
    )
    cases["declared more than sent"] = (
        *raw_request(images_header(size=len(one) + 8), one),
        400,
        "declares 12296 bytes of binary data but only 12288 remain",
    )
    body, headers = raw_request(images_header(size=len(one)), one)
    cases["binary without the header"] = (body, {}, 400, f"binary tensors need the {LENGTH} header")
    nan = np.full((1, 3, 32, 32), np.nan, np.float32).tobytes()
    cases["NaN in binary"] = (
        *raw_request(images_header(size=len(nan)), nan),
        400,
        "holds NaN or infinite values",
    )
    cases["header length not a number"] = (body, {LENGTH: "12x"}, 400, "non-negative whole number")
    cases["negative header length"] = (body, {LENGTH: "-5"}, 400, "non-negative whole number")
    cases["header length past the body"] = (
        body,
        {LENGTH: str(len(body) + 1)},
        400,
        f"the body has only {len(body)} bytes",
    )
    both = images_header(size=len(one), data=[0.0])
    cases["data and binary"] = (*raw_request(both, one), 400, "both JSON 'data' and binary_data_size")
    cases["neither data nor binary"] = (
        json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32]}]}).encode(),
        {},
        400,
        "neither 'data' nor binary_data_size",
    )
    short_json = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.5] * 10}]
    }
    cases["too few JSON values"] = (json.dumps(short_json).encode(), {}, 400, "needs 3072")
    strings = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": ["a"] * 3072}]
    }
    cases["strings for FP32"] = (json.dumps(strings).encode(), {}, 400, "must be an array of numbers")
    unknown = images_header(size=len(one))
    unknown["inputs"][0]["name"] = "pixels"
    cases["unknown input"] = (*raw_request(unknown, one), 400, "unknown input 'pixels'")
    two = images_header(size=len(one))
    two["inputs"].append({**two["inputs"][0], "name": "image_bytes"})
    cases["two inputs"] = (*raw_request(two, one, one), 400, "send exactly one input")
    cases["duplicate input"] = (
        *raw_request({"inputs": [images_header(size=len(one))["inputs"][0]] * 2}, one, one),
        400,
        "appears twice",
    )
    outputs = {**images_header(size=len(one)), "outputs": [{"name": "probs"}]}
    cases["unknown output"] = (*raw_request(outputs, one), 400, "unknown output 'probs'")
    shm = {
        **images_header(size=len(one)),
        "outputs": [{"name": "logits", "parameters": {"shared_memory_region": "r"}}],
    }
    cases["shared memory"] = (*raw_request(shm, one), 400, "shared memory is not supported")
    cases["classification not a count"] = (
        *raw_request(
            {
                **images_header(size=len(one)),
                "outputs": [{"name": "logits", "parameters": {"classification": "3"}}],
            },
            one,
        ),
        400,
        "'classification' must be a non-negative integer",
    )
    nine = np.zeros((9, 3, 32, 32), np.float32).tobytes()
    cases["too many images"] = (*raw_request(images_header(9), nine), 413, "9 images in one request")
    blob = encoded(b"not an image")
    cases["undecodable image"] = (
        *raw_request(
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ]
            },
            blob,
        ),
        400,
        "input 'image_bytes': cannot identify the image",
    )
    truncated = struct.pack("<I", 100) + b"abc"
    cases["BYTES element cut short"] = (
        *raw_request(
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(truncated)},
                    }
                ]
            },
            truncated,
        ),
        400,
        "declares 100 bytes but only 3 remain",
    )
    cases["BYTES as FP32"] = (
        *raw_request({"inputs": [{"name": "image_bytes", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
        400,
        "must be BYTES",
    )
    cases["bad request id"] = (
        *raw_request({"id": 5, **images_header(size=len(one))}, one),
        400,
        "'id' must be a string",
    )
    return cases


BAD = _bad_requests()


@pytest.mark.parametrize("case", list(BAD))
async def test_malformed_requests_get_a_clear_error(backend, case):
    body, headers, status, message = BAD[case]
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error"} and isinstance(error["error"], str)
    assert message in error["error"], error["error"]
    assert backend.batches == []  # nothing reached the model


async def test_body_over_the_limit_and_compressed_bodies_are_refused(backend):
    x = np.zeros((8, 3, 32, 32), np.float32).tobytes()  # 98 KB
    body, headers = raw_request(images_header(8), x)
    async with served(backend, max_body_bytes=64 * 1024) as client:
        large = await client.post(INFER, content=body, headers=headers)
        gzipped = await client.post(INFER, content=body, headers={**headers, "Content-Encoding": "gzip"})
        bad_header = await client.post(INFER, content=body, headers={**headers, "X-Timeout-Ms": "soon"})
    assert large.status_code == 413 and "exceeds the limit" in large.json()["error"]
    assert gzipped.status_code == 415 and "Content-Encoding gzip" in gzipped.json()["error"]
    assert bad_header.status_code == 400 and set(bad_header.json()) == {"error"}


async def test_our_own_routes_keep_their_error_shape(backend):
    async with served(backend) as client:
        response = await client.post("/classify", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and response.json()["error"]["type"] == "unsupported_media_type"


# -- batching, deadlines -------------------------------------------------------------------


async def test_v2_and_classify_requests_share_batches_and_get_their_own_answers(backend, tiny_model):
    x = [images(1, seed=i) for i in range(3)]
    png = sample_png(5)
    async with served(
        backend, max_batch_size=5, max_images_per_request=5, max_queue_delay_ms=10_000
    ) as client:
        requests = [post(client, [tensor_input(t, True)]) for t in x]
        requests.append(post(client, [tensor_input(images(1, 9), False)]))
        requests.append(client.post("/classify", content=png, headers={"content-type": "image/png"}))
        responses = await asyncio.gather(*requests)
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [200] * 5
    assert backend.batches == [5]  # one forward pass for all five requests
    for t, response in zip([*x, images(1, 9)], responses[:4], strict=True):
        np.testing.assert_allclose(
            triton_result(response).as_numpy("logits"), expected_logits(tiny_model, t), atol=1e-5
        )
    assert responses[4].json()["timing"]["batch_size"] == 5
    assert metric(metrics, "dat_batch_size_count") == 1
    assert metric(metrics, "dat_requests_total", endpoint="/v2/models/{model_name}/infer", status="200") == 4


async def test_timeout_parameter_shortens_the_deadline(backend):
    backend.gate.clear()  # the worker holds the first batch: the second request waits in the queue
    try:
        async with served(backend, max_queue_delay_ms=0) as client:
            first = asyncio.ensure_future(post(client, [tensor_input(images(1), False)]))
            await backend.wait_entered()
            late = await post(client, [tensor_input(images(1), False)], timeout=50_000)  # µs
            backend.gate.set()
            assert (await first).status_code == 200
    finally:
        backend.gate.set()
    assert late.status_code == 504 and "deadline" in late.json()["error"]


async def test_overload_is_refused_at_once_in_the_protocol_shape(backend):
    backend.gate.clear()
    body, headers = triton_request([tensor_input(images(1), True)])
    try:
        async with served(
            backend, max_batch_size=1, max_images_per_request=1, max_queue_size=1, max_queue_delay_ms=0
        ) as client:
            batcher = client._transport.app.state.service.classifier.batcher
            running = asyncio.ensure_future(client.post(INFER, content=body, headers=headers))
            await backend.wait_entered()
            queued = asyncio.ensure_future(client.post(INFER, content=body, headers=headers))
            await wait_until(lambda: batcher.queued_requests == 1)
            refused = await client.post(INFER, content=body, headers=headers)
            backend.gate.set()
            accepted = await asyncio.gather(running, queued)
    finally:
        backend.gate.set()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "overloaded" in refused.json()["error"]
    assert [r.status_code for r in accepted] == [200, 200] and backend.batches == [1, 1]


async def test_a_client_that_disconnects_costs_no_compute(backend):
    backend.gate.clear()
    body, headers = triton_request([tensor_input(images(1), True)])
    app = create_app(settings(max_queue_delay_ms=0), backend=backend)
    try:
        async with serve(app) as client:
            batcher = app.state.service.classifier.batcher
            running = asyncio.ensure_future(client.post(INFER, content=body, headers=headers))
            await backend.wait_entered()
            gone, sent, body_sent = asyncio.Event(), [], False

            async def receive() -> dict:
                nonlocal body_sent
                if not body_sent:
                    body_sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": INFER,
                "raw_path": INFER.encode(),
                "query_string": b"",
                "root_path": "",
                "client": ("127.0.0.1", 50000),
                "server": ("testserver", 80),
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
                + [(b"host", b"testserver")],
            }
            leaving = asyncio.ensure_future(app(scope, receive, send))
            await wait_until(lambda: batcher.queued_requests == 1)
            gone.set()
            await asyncio.wait_for(leaving, 5)
            backend.gate.set()
            assert (await running).status_code == 200
            metrics = (await client.get("/metrics")).text
    finally:
        backend.gate.set()
    assert sent == [] and backend.batches == [1]
    assert metric(metrics, "dat_dropped_requests_total", reason="disconnected") == 1


# -- OpenAPI -------------------------------------------------------------------------------


async def test_openapi_lists_the_v2_routes_with_summaries_and_errors(backend):
    async with served(backend) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        ("/v2", "get"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/models/{model_name}", "get"),
        ("/v2/models/{model_name}/versions/{model_version}", "get"),
        ("/v2/models/{model_name}/ready", "get"),
        ("/v2/models/{model_name}/versions/{model_version}/ready", "get"),
        ("/v2/models/{model_name}/infer", "post"),
        ("/v2/models/{model_name}/versions/{model_version}/infer", "post"),
    }
    found = {(path, method) for path, ops in paths.items() if path.startswith("/v2") for method in ops}
    assert found == expected
    for path, method in expected:
        assert paths[path][method]["summary"]
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    error = infer["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/V2Error")
    assert schema["components"]["schemas"]["V2Error"]["properties"]["error"]["type"] == "string"

"""The Open Inference Protocol v2 in process: metadata, health and readiness, batching with
/classify and deadlines, the OpenAPI document (inference: test_v2_infer.py; malformed
requests: test_v2_errors.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service import create_app
from tests.helpers.app import serve, served, settings, wait_until
from tests.helpers.images import sample_png
from tests.helpers.metrics import metric
from tests.helpers.v2 import (
    INFER,
    expected_logits,
    images,
    post,
    tensor_input,
    triton_request,
    triton_result,
)

pytestmark = pytest.mark.anyio


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

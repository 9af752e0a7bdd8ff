"""The HTTP contract: classify responses, health, models, metrics, docs, request ids."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service import create_app
from tests.helpers.app import serve, served, settings
from tests.helpers.images import sample_png
from tests.helpers.metrics import metric
from tests.helpers.tiny import LABELS

pytestmark = pytest.mark.anyio

PNG = {"content-type": "image/png"}


async def test_classify_returns_top_k_model_and_timing(backend, tiny_model):
    image = sample_png(1)
    async with served(backend) as client:
        response = await client.post("/classify", content=image, headers=PNG, params={"top_k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "dat", "version": "in-memory", "backend": "torch", "precision": "fp32"}
    assert body["request_id"] == response.headers["x-request-id"]
    (result,) = body["results"]
    assert (result["index"], result["filename"], result["width"], result["height"]) == (0, None, 40, 30)
    predictions = result["predictions"]
    assert len(predictions) == 3 and all(p["label"] == LABELS[p["index"]] for p in predictions)
    probs = [p["probability"] for p in predictions]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert result["points"] is None
    timing = body["timing"]
    assert timing["batch_size"] == 1
    assert timing["total_ms"] >= timing["inference_ms"] > 0 and timing["preprocess_ms"] > 0
    # the same numbers as the model itself
    from service.preprocess import prepare

    x = prepare(image, tiny_model.info.preprocessing, 10**7).tensor[None]
    expected = np.asarray(tiny_model(x).softmax(-1)[0].detach())
    assert predictions[0]["index"] == int(expected.argmax())
    assert predictions[0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)


async def test_points_of_the_deformable_blocks(backend):
    async with served(backend) as client:
        response = await client.post(
            "/classify?points=true",
            files=[
                ("files", ("a.png", sample_png(1), "image/png")),
                ("files", ("b.png", sample_png(2), "image/png")),
            ],
        )
    assert response.status_code == 200
    for result in response.json()["results"]:
        points = result["points"]
        # TINY_CONFIG: one D block in each of stages 2 and 3, 2 and 4 offset groups, 4x4 and 2x2 maps
        assert [(p["stage"], p["block"], p["groups"], p["height"], p["width"]) for p in points] == [
            (2, 1, 2, 4, 4),
            (3, 1, 4, 2, 2),
        ]
        yx = np.array(points[0]["yx"])
        assert yx.shape == (2, 4, 4, 2) and np.abs(yx).max() <= 1.5
    first, second = response.json()["results"]
    assert first["points"] != second["points"]  # per image, not per batch


async def test_health_models_metrics_and_docs(backend):
    async with served(backend, max_batch_size=8, max_queue_delay_ms=3) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
        models = (await client.get("/models")).json()
        await client.post("/classify", content=sample_png(0), headers=PNG)
        metrics = await client.get("/metrics")
        openapi = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
        missing = await client.get("/nope")
    assert live.status_code == 200 and live.json()["status"] == "alive"
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    (model,) = models["models"]
    assert model["name"] == "dat" and model["task"] == "classification" and model["ready"]
    assert (model["backend"], model["device"], model["precision"]) == ("torch", "cpu", "fp32")
    assert model["input_size"] == 32 and model["num_labels"] == 10 and model["supports_points"]
    assert model["batching"]["max_batch_size"] == 8 and model["batching"]["max_queue_delay_ms"] == 3
    assert model["preprocessing"]["input_size"] == 32
    assert model["preprocessing_device"] == "cpu"  # gpu_preprocess needs a CUDA model
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert metric(text, "dat_requests_total", endpoint="/classify", status="200") == 1
    assert metric(text, "dat_request_duration_seconds_count", endpoint="/classify") == 1
    for name in (
        "dat_queue_wait_seconds_count",
        "dat_preprocess_seconds_count",
        "dat_inference_seconds_count",
        "dat_batch_size_count",
        "dat_inference_images_total",
    ):
        assert metric(text, name) >= 1, name
    for name in ("dat_images_per_second", "dat_ready"):
        assert f"\n{name} " in text, name
    for name in ("dat_queue_images", "dat_queue_requests"):  # per batcher
        assert f'\n{name}{{task="classification"}} ' in text, name
    assert "/classify" in openapi["paths"] and "/health/ready" in openapi["paths"]
    body = openapi["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/*" in body
    assert docs.status_code == 200
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


async def test_request_ids_are_taken_from_the_client_or_made(backend):
    async with served(backend) as client:
        given = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
        hostile = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
        fresh = await client.get("/health/live")
    assert given.headers["x-request-id"] == "abc-123"
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"
    assert len(fresh.headers["x-request-id"]) == 32


async def test_not_ready_while_loading_and_while_draining(backend):
    backend.load_gate.clear()
    app = create_app(settings(), backend=backend)
    async with serve(app, wait_ready=False) as client:
        loading = await client.get("/health/ready")
        live = await client.get("/health/live")
        refused = await client.post("/classify", content=sample_png(0), headers=PNG)
        models = (await client.get("/models")).json()
        backend.load_gate.set()
        await app.state.service.wait_ready()
        ready = await client.get("/health/ready")
        app.state.service.begin_drain()
        draining = await client.get("/health/ready")
        refused_draining = await client.post("/classify", content=sample_png(0), headers=PNG)
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    assert loading.headers["retry-after"] == "1"
    assert live.status_code == 200
    assert refused.status_code == 503 and "not loaded" in refused.json()["error"]["message"]
    assert models["models"][0]["ready"] is False and models["models"][0]["name"] is None
    assert ready.status_code == 200
    assert draining.status_code == 503 and draining.json()["status"] == "draining"
    assert refused_draining.status_code == 503
    assert "shutting down" in refused_draining.json()["error"]["message"]


async def test_a_model_that_fails_to_load_is_reported(backend):
    def broken():
        raise RuntimeError("checkpoint does not fit")

    backend.load = broken
    app = create_app(settings(), backend=backend)
    failures = []
    app.state.service.on_fatal = failures.append
    async with serve(app, wait_ready=False) as client:
        with pytest.raises(RuntimeError, match="does not fit"):
            await app.state.service.wait_ready()
        ready = await client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "failed"
    assert "does not fit" in ready.json()["detail"]
    assert len(failures) == 1


async def test_stop_finishes_queued_requests(backend):
    """Shutdown in-process: queued requests are computed, not dropped (queue delay 30 s)."""
    app = create_app(settings(max_queue_delay_ms=30_000), backend=backend)
    batcher = app.state.service.classifier.batcher
    async with serve(app) as client:
        pending = [
            asyncio.create_task(client.post("/classify", content=sample_png(i), headers=PNG))
            for i in range(3)
        ]
        while batcher.queued_requests < 3:
            await asyncio.sleep(0.005)
        app.state.service.begin_drain()
        responses = await asyncio.wait_for(asyncio.gather(*pending), 10)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert backend.batches == [3]

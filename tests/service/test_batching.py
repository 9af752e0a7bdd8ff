"""Batching through HTTP: concurrent requests share forward passes, answers do not change."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.service.helpers import CountingBackend, metric, sample_png, served

pytestmark = pytest.mark.anyio

PNG = {"content-type": "image/png"}


def ranking(body: dict) -> list[list[str]]:
    return [[p["label"] for p in r["predictions"]] for r in body["results"]]


def probabilities(body: dict) -> list[float]:
    return [p["probability"] for r in body["results"] for p in r["predictions"]]


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tiny_model):
    images = [sample_png(i) for i in range(6)]
    batched_backend = CountingBackend(tiny_model)
    # A 10 s delay with room for exactly 6 images: the six requests can only come back quickly
    # by filling one batch, which then goes at once.
    async with served(
        batched_backend, max_batch_size=6, max_images_per_request=6, max_queue_delay_ms=10_000
    ) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.post("/classify", content=img, headers=PNG, params={"top_k": 10}) for img in images)
        )
        elapsed = time.monotonic() - started
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [200] * 6
    assert elapsed < 5
    assert batched_backend.batches == [6]
    assert metric(metrics, "dat_batch_size_count") == 1 and metric(metrics, "dat_batch_size_sum") == 6
    assert metric(metrics, "dat_batch_size_bucket", le="4.0") == 0
    batched = [r.json() for r in responses]
    assert all(b["timing"]["batch_size"] == 6 for b in batched)

    alone_backend = CountingBackend(tiny_model)
    async with served(alone_backend, max_queue_delay_ms=0) as client:
        alone = [
            (await client.post("/classify", content=img, headers=PNG, params={"top_k": 10})).json()
            for img in images
        ]
    assert alone_backend.batches == [1] * 6
    assert len({tuple(ranking(b)[0]) for b in alone}) > 1  # the images really differ
    for together, single in zip(batched, alone, strict=True):
        assert ranking(together) == ranking(single)
        assert probabilities(together) == pytest.approx(probabilities(single), abs=1e-5)


async def test_a_request_with_several_images_counts_each_image(backend):
    async with served(backend, max_batch_size=4, max_images_per_request=4, max_queue_delay_ms=200) as client:
        three = client.post(
            "/classify", files=[("files", (f"{i}.png", sample_png(i), "image/png")) for i in range(3)]
        )
        two = client.post(
            "/classify", files=[("files", (f"{i}.png", sample_png(i), "image/png")) for i in range(3, 5)]
        )
        r3, r2 = await asyncio.gather(three, two)
    assert r3.status_code == r2.status_code == 200
    # 3 + 2 images do not fit a batch of 4 and a request is never split: two batches
    assert sorted(backend.batches) == [2, 3]
    assert [r["filename"] for r in r3.json()["results"]] == ["0.png", "1.png", "2.png"]
    assert [r["index"] for r in r2.json()["results"]] == [0, 1]


async def test_multi_image_results_equal_single_image_results(backend):
    images = [sample_png(i) for i in range(3)]
    async with served(backend, max_queue_delay_ms=0) as client:
        together = (
            await client.post("/classify", files=[("files", (None, img, "image/png")) for img in images])
        ).json()
        alone = [(await client.post("/classify", content=img, headers=PNG)).json() for img in images]
    assert ranking(together) == [ranking(a)[0] for a in alone]
    assert probabilities(together) == pytest.approx(sum((probabilities(a) for a in alone), []), abs=1e-5)

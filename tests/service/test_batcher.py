"""The dynamic batcher: alone (no HTTP, no model), Triton's semantics one rule per test; then
through HTTP, where concurrent requests share forward passes and the answers do not change."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from service.batcher import Batcher
from service.errors import DeadlineExceeded, InferenceFailed, Unavailable
from tests.helpers.app import served
from tests.helpers.backends import CountingBackend
from tests.helpers.images import sample_png
from tests.helpers.metrics import metric

pytestmark = pytest.mark.anyio


class Recorder:
    """A run function that records the requests' images (each image is one number)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Semaphore(0)
        self.fail_on: int | None = None

    def __call__(self, inputs: torch.Tensor, want_points: bool) -> list[int]:
        self.started.release()
        self.gate.wait(10)
        values = [int(v) for v in inputs.flatten()]
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError("boom")
        self.batches.append(values)
        return [v * 10 for v in values]

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, True, 10)


def images(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1)


def far() -> float:
    return time.monotonic() + 30


def make(run: Recorder, **kw) -> Batcher:
    options = {"max_batch_size": 4, "max_queue_delay_s": 10.0, "max_queue_size": 16, **kw}
    batcher = Batcher(run, **options)
    batcher.start().result(5)
    return batcher


async def test_a_batch_that_fills_goes_at_once_and_outputs_follow_inputs():
    run = Recorder()
    batcher = make(run)  # a 10 s delay: only a full batch can go quickly
    try:
        started = time.monotonic()
        works = [batcher.submit(images(v), far()) for v in (1, 2, 3, 4)]
        results = await asyncio.gather(*(batcher.result(w) for w in works))
        assert time.monotonic() - started < 5
        assert run.batches == [[1, 2, 3, 4]]
        assert results == [[10], [20], [30], [40]]
        assert all(w.batch_size == 4 for w in works)
    finally:
        batcher.stop(5)


async def test_batch_size_counts_images_and_requests_are_never_split():
    run = Recorder()
    run.gate.clear()
    batcher = make(run, max_queue_delay_s=0.0)
    try:
        first = batcher.submit(images(0), far())
        await run.wait_started()  # the worker is busy: the next requests queue up
        works = [
            batcher.submit(images(1, 2, 3), far()),
            batcher.submit(images(4, 5), far()),
            batcher.submit(images(6), far()),
        ]
        run.gate.set()
        results = await asyncio.gather(batcher.result(first), *(batcher.result(w) for w in works))
        # FIFO; (4, 5) does not fit beside (1, 2, 3) in a batch of 4, so it waits for the next
        assert run.batches == [[0], [1, 2, 3], [4, 5, 6]]
        assert results[1:] == [[10, 20, 30], [40, 50], [60]]
    finally:
        batcher.stop(5)


async def test_the_delay_runs_from_the_oldest_request():
    run = Recorder()
    batcher = make(run, max_queue_delay_s=0.3)
    try:
        oldest = batcher.submit(images(1), far())
        await asyncio.sleep(0.15)  # a gap between arrivals, not a synchronisation
        newer = batcher.submit(images(2), far())
        await asyncio.gather(batcher.result(oldest), batcher.result(newer))
        assert run.batches == [[1, 2]]
        assert 0.25 <= oldest.queue_s < 1.0
        assert newer.queue_s < oldest.queue_s - 0.1  # went with the oldest, did not restart the clock
    finally:
        batcher.stop(5)


async def test_a_full_queue_refuses_at_once_and_keeps_what_it_accepted():
    run = Recorder()
    run.gate.clear()
    batcher = make(run, max_queue_size=3, max_queue_delay_s=0.0)
    try:
        busy = batcher.submit(images(0), far())
        await run.wait_started()
        queued = [batcher.submit(images(1, 2), far()), batcher.submit(images(3), far())]
        with pytest.raises(Unavailable, match="overloaded"):
            batcher.submit(images(4), far())
        assert batcher.metrics.dropped.labels("queue_full")._value.get() == 1
        run.gate.set()
        assert await batcher.result(busy) == [0]
        assert [await batcher.result(w) for w in queued] == [[10, 20], [30]]
    finally:
        batcher.stop(5)


async def test_a_request_past_its_deadline_is_never_computed():
    run = Recorder()
    run.gate.clear()
    batcher = make(run, max_queue_delay_s=0.0)
    try:
        busy = batcher.submit(images(0), far())
        await run.wait_started()
        late = batcher.submit(images(7), time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceeded, match="not computed"):
            await batcher.result(late)
        assert batcher.queued_requests == 0
        run.gate.set()
        await batcher.result(busy)
        after = batcher.submit(images(8), far())
        await batcher.result(after)
        assert run.batches == [[0], [8]]
        assert batcher.metrics.dropped.labels("deadline")._value.get() == 1
    finally:
        batcher.stop(5)


async def test_a_failing_batch_fails_only_its_own_requests():
    run = Recorder()
    run.fail_on = 13
    batcher = make(run, max_queue_delay_s=0.0)
    try:
        bad = batcher.submit(images(13), far())
        with pytest.raises(InferenceFailed, match="boom"):
            await batcher.result(bad)
        good = batcher.submit(images(5), far())
        assert await batcher.result(good) == [50]
    finally:
        batcher.stop(5)


async def test_outputs_must_match_inputs_one_to_one():
    batcher = Batcher(lambda inputs, points: [1], max_batch_size=4, max_queue_delay_s=0, max_queue_size=8)
    batcher.start().result(5)
    try:
        work = batcher.submit(images(1, 2), far())
        with pytest.raises(InferenceFailed, match="1 outputs for 2 images"):
            await batcher.result(work)
    finally:
        batcher.stop(5)


async def test_drain_sends_queued_requests_without_waiting_and_stop_finishes_them():
    run = Recorder()
    batcher = make(run, max_queue_delay_s=30.0)
    try:
        work = batcher.submit(images(3), far())
        batcher.drain()
        assert await asyncio.wait_for(batcher.result(work), 5) == [30]
    finally:
        batcher.stop(5)
    with pytest.raises(Unavailable, match="shutting down"):
        batcher.submit(images(4), far())


async def test_a_failed_setup_is_reported_and_nothing_is_accepted():
    def setup() -> None:
        raise RuntimeError("no weights")

    batcher = Batcher(Recorder(), max_batch_size=2, max_queue_delay_s=0, max_queue_size=2, setup=setup)
    with pytest.raises(RuntimeError, match="no weights"):
        batcher.start().result(5)
    with pytest.raises(Unavailable):
        batcher.submit(images(1), far())
    batcher.stop(1)


async def test_a_server_stopping_while_the_model_loads_lets_the_load_finish_quietly(monkeypatch):
    """Shutdown cancels its wait for the load (``ServiceState.stop``); the loading thread must
    not then fail on the cancelled future."""
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    loading = threading.Event()
    batcher = Batcher(Recorder(), max_batch_size=2, max_queue_delay_s=0, max_queue_size=2, setup=loading.wait)
    waiting = asyncio.ensure_future(asyncio.wrap_future(batcher.start()))
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.sleep(0.05)
    loading.set()
    batcher.stop(5)
    assert not batcher._thread.is_alive()
    assert crashed == []


# -- through HTTP -------------------------------------------------------------------------

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

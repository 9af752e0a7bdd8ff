"""Hard to break: overload, deadlines, clients that leave, batches that fail.

The instrumented backend's gate holds the worker inside a batch, so "the queue is full" or
"this request is still queued" are states we wait for, not timings we hope for.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from service import create_app
from tests.helpers.app import serve, served, settings, wait_until
from tests.helpers.images import sample_png
from tests.helpers.metrics import metric

pytestmark = pytest.mark.anyio

PNG = {"content-type": "image/png"}
IMAGE = sample_png(0)


def classify(client, **params):
    headers = {**PNG, **params.pop("headers", {})}
    return client.post("/classify", content=IMAGE, headers=headers, params=params)


async def test_overload_is_refused_at_once_while_accepted_requests_succeed(backend):
    backend.gate.clear()
    async with served(
        backend, max_batch_size=1, max_images_per_request=1, max_queue_size=2, max_queue_delay_ms=0
    ) as client:
        batcher = client._transport.app.state.service.classifier.batcher
        running = asyncio.create_task(classify(client))
        await backend.wait_entered()
        queued = [asyncio.create_task(classify(client)) for _ in range(2)]
        await wait_until(lambda: batcher.queued_requests == 2)

        started = time.monotonic()
        refused = await asyncio.gather(*(classify(client) for _ in range(5)))
        refused_within = time.monotonic() - started
        # refused while the worker is still held: the answers did not wait for compute
        assert not running.done()
        backend.gate.set()
        accepted = await asyncio.gather(running, *queued)
        metrics = (await client.get("/metrics")).text
    assert refused_within < 2
    for response in refused:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["type"] == "unavailable"
        assert "overloaded" in response.json()["error"]["message"]
    assert [r.status_code for r in accepted] == [200, 200, 200]
    assert backend.images_computed == 3
    assert metric(metrics, "dat_requests_total", endpoint="/classify", status="503") == 5
    assert metric(metrics, "dat_dropped_requests_total", reason="queue_full") == 5


async def test_inflight_limit_refuses_before_reading_the_body(backend):
    backend.gate.clear()
    async with served(backend, max_inflight_requests=1, max_queue_delay_ms=0) as client:
        running = asyncio.create_task(classify(client))
        await backend.wait_entered()
        refused = await classify(client)
        backend.gate.set()
        assert (await running).status_code == 200
    assert refused.status_code == 503 and "in flight" in refused.json()["error"]["message"]


async def test_expired_deadlines_get_504_and_are_never_computed(backend):
    backend.gate.clear()
    async with served(backend, max_queue_delay_ms=0) as client:
        running = asyncio.create_task(classify(client))
        await backend.wait_entered()
        by_param = await classify(client, timeout_ms=50)
        by_header = await classify(client, headers={"X-Timeout-Ms": "50"})
        assert not running.done()
        backend.gate.set()
        assert (await running).status_code == 200
        after = await classify(client)
        metrics = (await client.get("/metrics")).text
    for response in (by_param, by_header):
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["type"] == "deadline_exceeded" and "not computed" in error["message"]
    assert after.status_code == 200
    assert backend.batches == [1, 1]  # the running request and the one after: nothing else
    assert metric(metrics, "dat_dropped_requests_total", reason="deadline") == 2


async def test_a_client_cannot_extend_the_server_deadline(backend):
    backend.gate.clear()
    async with served(backend, max_queue_delay_ms=0, default_timeout_ms=1000) as client:
        running = asyncio.create_task(classify(client))
        await backend.wait_entered()
        started = time.monotonic()
        extended = await classify(client, timeout_ms=60_000)
        waited = time.monotonic() - started
        # the running request's deadline passed too: it is answered on time, its outputs dropped
        overdue = await running
        backend.gate.set()
        after = await classify(client)
    assert extended.status_code == 504 and waited < 5
    assert "not computed" in extended.json()["error"]["message"]
    assert overdue.status_code == 504 and "while" in overdue.json()["error"]["message"]
    assert after.status_code == 200
    assert backend.batches == [1, 1]


async def test_a_client_that_disconnects_costs_no_compute(backend):
    backend.gate.clear()
    app = create_app(settings(max_queue_delay_ms=0), backend=backend)
    async with serve(app) as client:
        batcher = app.state.service.classifier.batcher
        running = asyncio.create_task(classify(client))
        await backend.wait_entered()

        gone = asyncio.Event()
        body_sent = False
        sent: list[dict] = []

        async def receive() -> dict:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": IMAGE, "more_body": False}
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
            "path": "/classify",
            "raw_path": b"/classify",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"image/png"), (b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        leaving = asyncio.create_task(app(scope, receive, send))
        await wait_until(lambda: batcher.queued_requests == 1)
        gone.set()
        await asyncio.wait_for(leaving, 5)
        assert batcher.queued_requests == 0
        backend.gate.set()
        assert (await running).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert sent == []  # nobody to answer
    assert backend.batches == [1]  # only the request that stayed was computed
    assert metric(metrics, "dat_dropped_requests_total", reason="disconnected") == 1
    assert metric(metrics, "dat_requests_total", endpoint="/classify", status="499") == 1


async def test_a_failing_batch_fails_its_own_requests_and_the_server_keeps_serving(backend):
    failures = iter([True])
    backend.fail_when = lambda images: next(failures, False)
    async with served(backend, max_queue_delay_ms=0) as client:
        failed = await classify(client)
        recovered = await classify(client)
        ready = await client.get("/health/ready")
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "inference_failed"
    assert "injected failure" in failed.json()["error"]["message"]
    assert recovered.status_code == 200 and ready.status_code == 200


def stalled_upload(app, sent: bytes, declared: int):
    """A request whose body stops after ``sent`` of its ``declared`` bytes, straight into the
    app: returns (task, leave), ``leave`` being the event that makes its client go away."""
    leave = asyncio.Event()
    chunks = [{"type": "http.request", "body": sent, "more_body": True}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop()
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/classify",
        "raw_path": b"/classify",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50001),
        "server": ("testserver", 80),
        "headers": [
            (b"content-type", b"image/png"),
            (b"host", b"testserver"),
            (b"content-length", str(declared).encode()),
        ],
    }
    return asyncio.create_task(app(scope, receive, send)), leave


async def test_a_request_still_being_read_holds_no_inference_slot(backend):
    app = create_app(settings(max_inflight_requests=1, max_queue_delay_ms=0), backend=backend)
    async with serve(app) as client:
        service = app.state.service
        stalled, leave = stalled_upload(app, IMAGE[:4], 100_000)
        await wait_until(lambda: service.reading_requests == 1)
        served_meanwhile = [await classify(client) for _ in range(3)]
        leave.set()
        await asyncio.wait_for(stalled, 5)
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in served_meanwhile] == [200, 200, 200]
    assert metric(metrics, "dat_reading_requests") == 0 and metric(metrics, "dat_inflight_requests") == 0


async def test_bytes_of_unfinished_bodies_have_their_own_budget(backend):
    # 6,000 bytes held by a body that has not finished: a second body that would take the
    # bytes being read past 8,192 is refused while the first is still arriving
    app = create_app(
        settings(max_body_bytes=8192, max_reading_bytes=8192, max_queue_delay_ms=0), backend=backend
    )
    async with serve(app) as client:
        service = app.state.service
        stalled, leave = stalled_upload(app, b"\x89PNG" + bytes(5996), 8000)
        await wait_until(lambda: service.reading_bytes == 6000)
        refused = await classify(client)
        leave.set()
        await asyncio.wait_for(stalled, 5)
        accepted = await classify(client)
        metrics = (await client.get("/metrics")).text
    assert len(IMAGE) > 8192 - 6000
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "being read" in refused.json()["error"]["message"]
    assert accepted.status_code == 200
    assert metric(metrics, "dat_dropped_requests_total", reason="reading_budget") == 1

"""Health that follows the backend: readiness turns 503 after consecutive failed batches and a
probe batch restores it; liveness turns 503 when the inference thread died or is stuck."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.app import served, wait_until
from tests.helpers.images import sample_png

pytestmark = pytest.mark.anyio

PNG = {"content-type": "image/png"}


async def _classify(client, seed: int = 0, **params):
    return await client.post("/classify", content=sample_png(seed), headers=PNG, params=params)


async def _readiness(client) -> dict[str, tuple[int, dict]]:
    paths = ("/health/ready", "/v2/health/ready", "/v2/models/dat/ready")
    return {path: ((r := await client.get(path)).status_code, r.json()) for path in paths}


async def test_consecutive_failed_batches_turn_readiness_503_and_a_probe_restores_it(backend):
    broken = {"now": True}
    backend.fail_when = lambda images: broken["now"]
    async with served(backend, unhealthy_after_failures=2, probe_interval_s=0.05) as client:
        assert (await _classify(client)).status_code == 500
        assert {code for code, _ in (await _readiness(client)).values()} == {200}  # one failure: ready
        assert (await _classify(client, 1)).status_code == 500
        readiness = await _readiness(client)
        assert {code for code, _ in readiness.values()} == {503}
        status, body = readiness["/health/ready"]
        assert body["status"] == "failing"
        for reason in (
            body["detail"],
            readiness["/v2/health/ready"][1]["reason"],
            readiness["/v2/models/dat/ready"][1]["reason"],
        ):
            assert "classification model: 2 consecutive batches failed" in reason
            assert "RuntimeError: injected failure" in reason
        assert readiness["/v2/health/ready"][1]["ready"] is False
        # probes keep failing while the backend does; no request is sent from here on
        probes_before = backend.entered._value
        await wait_until(lambda: backend.entered._value >= probes_before + 2)
        assert (await client.get("/health/ready")).status_code == 503
        computed = list(backend.batches)
        broken["now"] = False
        for _ in range(200):  # the next probe succeeds within 0.05 s
            if (await client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert backend.batches[len(computed) :] == [1]  # what made it ready: the probe, one image
        readiness = await _readiness(client)
        assert {code for code, _ in readiness.values()} == {200}, readiness
        assert "reason" not in readiness["/v2/health/ready"][1]
        assert (await _classify(client)).status_code == 200


async def test_a_good_batch_between_failures_resets_the_count(backend):
    fail = iter([True, False, True, True])
    backend.fail_when = lambda images: next(fail, False)
    async with served(backend, unhealthy_after_failures=2) as client:
        codes = [(await _classify(client, seed)).status_code for seed in range(3)]
        assert codes == [500, 200, 500]
        assert (await client.get("/health/ready")).status_code == 200
        assert (await _classify(client, 3)).status_code == 500
        assert (await client.get("/health/ready")).status_code == 503


async def test_liveness_fails_while_one_batch_runs_past_the_timeout(backend):
    backend.gate.clear()  # the worker stays inside run()
    # 2 s: the first check comes well inside it even on a busy CI host (0.2 s was not always)
    async with served(backend, stuck_batch_timeout_s=2.0) as client:
        request = asyncio.ensure_future(_classify(client))
        await backend.wait_entered()
        assert (await client.get("/health/live")).status_code == 200  # not yet past the timeout
        await asyncio.sleep(2.1)
        live, v2 = await client.get("/health/live"), await client.get("/v2/health/live")
        assert live.status_code == 503 and live.json()["status"] == "stuck"
        assert "classification inference thread has been inside one batch for" in live.json()["detail"]
        assert v2.status_code == 503 and v2.json()["live"] is False and "one batch" in v2.json()["reason"]
        backend.gate.set()
        assert (await request).status_code == 200
        assert (await client.get("/health/live")).status_code == 200


class Fatal(BaseException):
    """Not an Exception: nothing on the way catches it, so it ends the inference thread."""


async def test_liveness_fails_when_the_inference_thread_has_died(backend):
    def die(images):
        raise Fatal("the backend took the thread down")

    backend.fail_when = die
    async with served(backend) as client:
        first = await _classify(client)
        assert first.status_code == 500 and "Fatal" in first.json()["error"]["message"]
        live = await client.get("/health/live")
        assert live.status_code == 503 and live.json()["status"] == "dead"
        assert "classification inference thread has stopped" in live.json()["detail"]
        assert "Fatal: the backend took the thread down" in live.json()["detail"]
        assert (await client.get("/v2/health/live")).status_code == 503
        assert (await client.get("/health/ready")).status_code == 503
        # what arrives later is refused at once, not left to wait for its deadline
        later = await _classify(client, 1)
        assert later.status_code == 503

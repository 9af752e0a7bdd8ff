"""``--workers 2`` in front-end mode as a real server: two front ends, one inference process
and its one batcher. Each answer belongs to its own request although batches mix the front
ends' images; deadlines, overload, cancellation and a dead inference process behave as the
single process's do (its own tests: test_process, test_overload, test_batcher)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from models import create_model, save_safetensors
from tests.helpers.images import sample_png
from tests.helpers.paths import REPO
from tests.helpers.server import start, wait_ready
from tests.helpers.tiny import TINY_CONFIG

pytestmark = pytest.mark.slow


class Server:
    """A started ``python -m service``, its JSON logs collected as they come."""

    def __init__(self, *args: str) -> None:
        self.process, self.url = start(*args)
        self.logs: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self.logs.append(json.loads(line))

    def log(self, msg: str) -> dict:
        self.wait_for(lambda logs: any(e["msg"] == msg for e in logs), f"logged {msg!r}")
        return next(e for e in list(self.logs) if e["msg"] == msg)

    def wait_for(self, condition: Callable[[list[dict]], bool], what: str, within_s: float = 30) -> None:
        deadline = time.monotonic() + within_s
        while not condition(list(self.logs)):
            assert time.monotonic() < deadline, f"never {what}"
            time.sleep(0.05)

    def answered(self, path: str) -> set[int]:
        return {
            e["pid"] for e in list(self.logs) if e.get("logger") == "service.access" and e.get("path") == path
        }

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self._reader.join(5)


def classify(url: str, images: list[bytes], **params: object) -> httpx.Response:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(f"{url}/classify", files=files, params={"top_k": 10, **params}, timeout=30)


def probabilities(result: dict) -> list[float]:
    return [p["probability"] for p in sorted(result["predictions"], key=lambda p: p["index"])]


def wait_status(url: str, status: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/health/ready never answered {status}")


def test_answers_match_their_images_across_front_ends_and_the_inference_process_comes_back(
    tiny_config_file, tmp_path
):
    weights = tmp_path / "tiny.safetensors"  # the restarted process loads the same model
    save_safetensors(create_model(TINY_CONFIG), weights)
    server = Server(
        "--model", str(tiny_config_file), "--checkpoint", str(weights), "--workers", "2",
        "--no-warmup", "--detector", "none", "--max-queue-delay-ms", "300",
    )  # fmt: skip
    url = server.url
    try:
        wait_ready(server.process, url)
        images = [sample_png(seed) for seed in range(8)]
        alone = [probabilities(classify(url, [image]).json()["results"][0]) for image in images]
        assert len({tuple(round(p, 4) for p in probs) for probs in alone}) == len(images)  # distinguishable

        # one and two images per request, a new connection each: both front ends, mixed batches
        requests = [[i] for i in range(8)] + [[i, (i + 3) % 8] for i in range(8)] + [[i] for i in range(8)]
        with ThreadPoolExecutor(len(requests)) as pool:
            responses = list(pool.map(lambda idx: classify(url, [images[i] for i in idx]), requests))
        assert [r.status_code for r in responses] == [200] * len(requests)
        for idx, response in zip(requests, responses):
            for i, result in zip(idx, response.json()["results"], strict=True):
                assert probabilities(result) == pytest.approx(alone[i], abs=1e-5)
        assert max(r.json()["timing"]["batch_size"] for r in responses) > 2  # batched together
        assert server.answered("/classify") == set(server.log("started workers")["pids"])

        # the inference process dies: 503, then a new one serves and the front ends reach it
        front_ends, before_kill = set(server.log("started workers")["pids"]), len(server.logs)
        os.kill(server.log("started workers")["inference_pid"], signal.SIGKILL)
        wait_status(url, 503, within_s=10)
        ready = httpx.get(f"{url}/health/ready").json()
        if ready["status"] == "failing":  # not yet back: says why
            assert "inference process is not connected" in ready["detail"]
        wait_status(url, 200, within_s=120)
        # readiness is each front end's own: one may answer 200 while the other still connects
        server.wait_for(
            lambda logs: (
                {e["pid"] for e in logs[before_kill:] if e["msg"] == "connected to the inference process"}
                == front_ends
            ),
            "both front ends connected to the new inference process",
        )
        again = classify(url, [images[5]])
        assert again.status_code == 200, again.text
        assert probabilities(again.json()["results"][0]) == pytest.approx(alone[5], abs=1e-5)
    finally:
        code = server.stop()
    assert code == 0
    restarted = server.log("the inference process exited with -9: starting another (restart 1)")
    assert restarted["restarts"] == 1
    assert server.log("the front ends have drained: stopping the inference process")


def test_deadlines_overload_and_cancellation_across_processes():
    # 20 images/s: a batch of 8 runs 0.4 s; the global queue holds 16 images, each front end's
    # slots 16 (two requests of 8: a slot that leaked would soon refuse every full request)
    server = Server(
        "--backend", "simulated", "--simulated-ips", "20", "--workers", "2",
        "--max-batch-size", "8", "--max-queue-size", "16", "--frontend-slots", "16",
        "--max-queue-delay-ms", "1", "--no-warmup",
    )  # fmt: skip
    url = server.url
    eight = [sample_png(0)] * 8
    try:
        wait_ready(server.process, url)
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(classify, url, eight)
            time.sleep(0.1)  # its batch runs
            late = classify(url, [sample_png(1)], timeout_ms=100)
            assert busy.result().status_code == 200
        assert late.status_code == 504, late.text
        assert late.json()["error"]["type"] == "deadline_exceeded"

        # 1 batch running + 16 images queued at most: of 12 requests of 8 images, some are refused
        with ThreadPoolExecutor(12) as pool:
            burst = list(pool.map(lambda _: classify(url, eight), range(12)))
        statuses = sorted(r.status_code for r in burst)
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        refusals = {r.json()["error"]["message"] for r in burst if r.status_code == 503}
        assert all("slots are taken" in m or "queue" in m for m in refusals), refusals
        assert all(r.headers.get("retry-after") for r in burst if r.status_code == 503)

        # the detector has its own batcher and slots in the inference process
        found = httpx.post(
            f"{url}/detect", files=[("file", ("x.png", eight[0], "image/png"))] * 2, timeout=30
        )
        assert found.status_code == 200, found.text
        assert len(found.json()["results"]) == 2

        # clients that leave free their slots: afterwards every front end takes full requests
        for _ in range(6):
            with pytest.raises(httpx.TimeoutException):
                httpx.post(
                    f"{url}/classify", files=[("file", ("x.png", eight[0], "image/png"))] * 8, timeout=0.05
                )
        time.sleep(2.5)  # whatever of theirs had started has run
        after = [classify(url, eight) for _ in range(6)]
        assert [r.status_code for r in after] == [200] * 6
    finally:
        code = server.stop()
    assert code == 0


def test_a_front_end_told_to_stop_before_it_reached_the_inference_process_exits(tmp_path):
    """SIGTERM while startup waits for an inference process that will never come (its parent
    was killed and took it along): the front end stops waiting and exits."""
    script = (
        "import sys\n"
        "from service.supervisor import _frontend\n"
        "from service.workers import worker_sockets\n"
        "_frontend(sys.argv[2:], worker_sockets('127.0.0.1', 0, 1)[0], sys.argv[1])\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "nobody-listens.sock"),
         "--backend", "simulated", "--detector", "none", "--no-warmup"],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", "DAT_LOG_LEVEL": "info"},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for line in process.stderr:  # uvicorn's lifespan startup: the front end waits in it
            if "Waiting for application startup" in line:
                break
        else:
            raise AssertionError(f"exited before its startup ({process.wait()})")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_inference_process_dying_during_a_drain_ends_it_at_once():
    """SIGTERM, then the inference process is killed while a request waits on it: the request
    gets 503, the front ends do not wait out the 60 s drain, and the exit status says so."""
    server = Server(
        "--backend", "simulated", "--simulated-ips", "2", "--workers", "2", "--no-warmup",
        "--detector", "none", "--max-queue-delay-ms", "1", "--shutdown-timeout-s", "60",
    )  # fmt: skip
    try:
        wait_ready(server.process, server.url)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(classify, server.url, [sample_png(0)] * 8)  # 4 s on the device
            time.sleep(1.0)
            server.process.send_signal(signal.SIGTERM)
            server.log("draining")
            started = time.monotonic()
            os.kill(server.log("started workers")["inference_pid"], signal.SIGKILL)
            response = waiting.result()
        assert response.status_code == 503
        assert "inference process stopped" in response.json()["error"]["message"]
        assert server.process.wait(timeout=30) == 1  # the inference process's -9
        assert time.monotonic() - started < 20
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_a_burst_of_connections_spreads_over_the_front_ends():
    """64 keep-alive connections opened at once, as a gateway's pool opens them: every front
    end serves its share. (On one shared listening socket, the front end woken first accepted
    all that waited: 32 of 32, or 0, 0, 9 and 23 of 32 over four, measured.)"""
    server = Server(
        "--backend", "simulated", "--workers", "4", "--no-warmup", "--detector", "none",
    )  # fmt: skip
    try:
        wait_ready(server.process, server.url)
        # each listens once ready (its resize compiled): then it takes its share
        server.wait_for(
            lambda logs: sum(e["msg"] == "ready" for e in logs) == 4, "seen four front ends ready"
        )
        host, port = server.url.removeprefix("http://").split(":")
        connections = [socket.create_connection((host, int(port)), timeout=30) for _ in range(64)]
        for connection in connections:  # all are waiting before any request is answered
            connection.sendall(b"GET /models HTTP/1.1\r\nhost: test\r\n\r\n")
        for connection in connections:
            assert connection.recv(12) == b"HTTP/1.1 200"
            connection.close()
        server.wait_for(lambda logs: sum(e.get("path") == "/models" for e in logs) == 64, "logged 64 answers")
        answers = Counter(e["pid"] for e in list(server.logs) if e.get("path") == "/models")
        # each front end's share is binomial(64, 1/4) when spread by hash: under 4 has p < 1e-4
        assert len(answers) == 4 and min(answers.values()) >= 4, answers
    finally:
        assert server.stop() == 0

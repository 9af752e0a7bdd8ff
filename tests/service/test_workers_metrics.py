"""``--workers N``: /metrics describes every worker, whichever one answers the scrape (the HPA
reads dat_queue_images and dat_inflight_requests from one pod's /metrics)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.images import sample_png
from tests.helpers.metrics import metric
from tests.helpers.server import start, wait_ready

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["frontends", "replicas"])
def test_with_two_workers_every_scrape_adds_up_both(tiny_config_file, mode):
    """Front ends: queue and batch figures come from the inference process, requests in flight
    and connections from the front ends; replicas: each worker has its own of everything."""
    # a batch leaves after 4 s unless 16 images wait: requests stay queued long enough to scrape
    process, url = start(
        "--model",
        str(tiny_config_file),
        "--workers",
        "2",
        "--worker-mode",
        mode,
        "--no-warmup",
        "--detector",
        "none",
        "--max-queue-delay-ms",
        "4000",
    )
    logs: list[dict] = []

    def read_logs() -> None:
        for line in process.stderr:
            if line.strip():
                logs.append(json.loads(line))

    reader = threading.Thread(target=read_logs, daemon=True)
    reader.start()
    held: list[socket.socket] = []
    try:
        wait_ready(process, url)
        deadline = time.monotonic() + 90  # the port answers once one worker is ready
        while len({e["pid"] for e in list(logs) if e["msg"] == "ready"}) < 2:
            assert time.monotonic() < deadline, "the second worker never became ready"
            time.sleep(0.1)
        parts = urlsplit(url)
        for _ in range(16):  # connections that stay open, each with the worker that took it
            sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
            sock.sendall(b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /models HTTP/1.1\r\n")  # half a head: open until its deadline
            held.append(sock)

        png = sample_png(0)
        with ThreadPoolExecutor(8) as pool:
            queued = [
                pool.submit(
                    httpx.post,
                    f"{url}/classify",
                    content=png,
                    timeout=30,
                    headers={"content-type": "image/png"},
                )
                for _ in range(8)
            ]
            deadline = time.monotonic() + 3
            while metric(httpx.get(f"{url}/metrics").text, "dat_queue_requests") != 8:
                assert time.monotonic() < deadline, "the scrapes never saw all 8 queued requests"
            scrapes = [httpx.get(f"{url}/metrics").text for _ in range(6)]  # new connections
            statuses = [f.result().status_code for f in queued]
        after = [httpx.get(f"{url}/metrics").text for _ in range(6)]
    finally:
        for sock in held:
            sock.close()
        process.send_signal(signal.SIGTERM)  # a killed parent would leave its workers running
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)

    assert statuses == [200] * 8
    for text in scrapes:
        assert metric(text, "dat_queue_requests") == 8
        assert metric(text, "dat_queue_images") == 8
        assert metric(text, "dat_inflight_requests") == 8
        # the 16 held, the 8 queued, and this scrape's own
        assert metric(text, "dat_open_connections") == 16 + 8 + 1
        assert metric(text, "dat_ready") == 1
    for text in after:
        assert metric(text, "dat_requests_total", endpoint="/models", status="200") == 16
        assert metric(text, "dat_requests_total", endpoint="/classify", status="200") == 8
        assert metric(text, "dat_inference_images_total") == 8
        assert metric(text, "dat_queue_requests") == 0 and metric(text, "dat_inflight_requests") == 0
    # both workers took part: no single worker's own figures could have added up to these
    answered = {
        e["pid"]
        for e in logs
        if e.get("logger") == "service.access" and e.get("path") in ("/models", "/classify")
    }
    assert len(answered) == 2, answered
    assert process.returncode == 0
    (started,) = [e for e in logs if e["msg"] == "started workers"]
    assert not os.path.exists(started["metrics_dir"])  # a temporary directory, removed at exit

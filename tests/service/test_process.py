"""``python -m service`` as a real process: uvicorn on a free loopback port, signals, exit codes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from service.__main__ import main
from tests.helpers.images import sample_png
from tests.helpers.metrics import metric
from tests.helpers.paths import REPO
from tests.helpers.server import start, wait_ready


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def ended(process: subprocess.Popen) -> Iterator[list[dict]]:
    """Yields a list that holds the process's JSON log lines once the block is over; the
    process is killed first if the block left it running (a failed check)."""
    logs: list[dict] = []
    try:
        yield logs
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        logs.extend(json_lines(process.stderr.read()))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_real_server_serves_batches_and_drains_on_sigterm(tiny_config_file, workers):
    """With 2 front ends the queued requests may come through either: one batch all the same."""
    process, url = start(
        "--workers",
        workers,
        "--model",
        str(tiny_config_file),
        "--max-queue-delay-ms",
        "3000",
        "--max-batch-size",
        "8",
        "--no-warmup",
        "--shutdown-timeout-s",
        "20",
    )
    with ended(process) as logs:
        wait_ready(process, url)
        single = httpx.post(
            f"{url}/classify",
            files={"file": ("x.png", sample_png(0), "image/png")},
            headers={"X-Request-ID": "req-1"},
            params={"timeout_ms": 5000},
            timeout=10,
        )
        assert single.status_code == 200 and single.headers["x-request-id"] == "req-1"
        assert single.json()["results"][0]["filename"] == "x.png"

        # three requests wait in the queue (3 s delay, batch of 8 not full) when SIGTERM comes
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            pending = [
                pool.submit(
                    httpx.post,
                    f"{url}/classify",
                    content=sample_png(i),
                    headers={"content-type": "image/png"},
                    timeout=30,
                )
                for i in range(3)
            ]
            deadline = time.monotonic() + 20
            while metric(httpx.get(f"{url}/metrics").text, "dat_queue_requests") < 3:
                assert time.monotonic() < deadline, "requests never queued"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=30) for f in pending]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert [r.json()["timing"]["batch_size"] for r in responses] == [3, 3, 3]
        # drained at once, not after the 3 s delay
        assert max(r.json()["timing"]["queue_ms"] for r in responses) < 2500
        assert process.wait(timeout=30) == 0

    messages = [entry["msg"] for entry in logs]
    assert "draining" in messages and "stopped" in messages
    access = [e for e in logs if e["logger"] == "service.access" and e["path"] == "/classify"]
    assert any(e["request_id"] == "req-1" and e["status"] == 200 for e in access)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health/live", timeout=1)


def test_replicas_share_the_port_each_with_its_model_and_all_drain(tiny_config_file):
    process, url = start(
        "--model",
        str(tiny_config_file),
        "--workers",
        "2",
        "--worker-mode",
        "replicas",
        "--no-warmup",
        "--max-queue-delay-ms",
        "1",
    )
    with ended(process) as logs:
        wait_ready(process, url)
        statuses = []
        for i in range(24):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client() as client:
                statuses.append(
                    client.post(
                        f"{url}/classify",
                        content=sample_png(i),
                        headers={"content-type": "image/png"},
                        timeout=10,
                    ).status_code
                )
        assert statuses == [200] * 24
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0

    (started,) = [e for e in logs if e["msg"] == "started workers"]
    workers = set(started["pids"])
    assert len(workers) == 2 and process.pid not in workers
    assert {e["pid"] for e in logs if e["msg"] == "model loaded"} == workers
    assert {e["pid"] for e in logs if e["msg"] == "stopped"} == workers
    answered = {e["pid"] for e in logs if e["logger"] == "service.access" and e["path"] == "/classify"}
    assert answered <= workers and answered  # one or both, as the kernel spread the connections


@pytest.mark.parametrize("workers", [["1"], ["2"], ["2", "--worker-mode", "replicas"]])
def test_a_model_that_cannot_load_exits_1(tiny_config_file, tmp_path, workers):
    """With replicas, the one that fails stops the rest and the parent reports it; with front
    ends, the inference process fails and the parent stops the front ends."""
    missing = tmp_path / "missing.safetensors"
    process, _ = start("--model", str(tiny_config_file), "--checkpoint", str(missing), "--workers", *workers)
    with ended(process) as logs:
        assert process.wait(timeout=120) == 1

    assert any(e["msg"].startswith("model failed to load") and "not found" in e["msg"] for e in logs)


@pytest.mark.parametrize("workers", [["1"], ["2"], ["2", "--worker-mode", "replicas"]])
def test_a_port_in_use_exits_3_and_says_so_in_a_line(workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.run(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
             "--backend", "simulated", "--detector", "none", "--no-warmup", "--workers", *workers],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert process.returncode == 3  # uvicorn's status for a start that failed
    assert "address already in use" in process.stderr.lower() and "Traceback" not in process.stderr


def test_bad_settings_exit_2_and_help_lists_the_flags(capsys, monkeypatch):
    assert main(["--max-images-per-request", "64", "--max-batch-size", "8"]) == 2
    assert "must not exceed max_batch_size" in capsys.readouterr().err
    monkeypatch.setenv("DAT_BACKEND", "onnxruntime")
    assert main([]) == 2
    assert "needs --artifacts" in capsys.readouterr().err
    monkeypatch.delenv("DAT_BACKEND")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--model",
        "--checkpoint",
        "--artifacts",
        "--backend",
        "--device",
        "--precision",
        "--max-batch-size",
        "--max-queue-delay-ms",
        "--max-queue-size",
        "--default-timeout-ms",
        "--max-body-bytes",
        "--max-images-per-request",
        "--max-image-pixels",
        "--shutdown-timeout-s",
        "DAT_MAX_BATCH_SIZE",
    ):
        assert flag in text, flag


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(child) for child in f.read().split()}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("mode", ["frontends", "replicas"])
def test_workers_exit_when_their_parent_is_killed(mode):
    """A parent killed outright (OOM killer, SIGKILL) must not leave workers holding the port."""
    process, url = start(
        "--backend", "simulated", "--workers", "2", "--worker-mode", mode, "--no-warmup",
        "--detector", "none", "--shutdown-timeout-s", "5",  # orphans drain, bounded: the exit is tested
    )  # fmt: skip
    workers: set[int] = set()
    try:
        wait_ready(process, url)
        workers = children(process.pid)
        assert len(workers) >= 2
        process.kill()
        process.wait()
        deadline = time.monotonic() + 60  # a busy host: drains stop at 5 s, starts are slow
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"left running: {[p for p in workers if alive(p)]}"
            time.sleep(0.1)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health/live", timeout=1)
    finally:  # whatever is left would hold the port and the test's pipes
        for pid in [process.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()

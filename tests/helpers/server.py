"""``python -m service`` as a real process on a loopback port: start, wait until ready, stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from tests.helpers.paths import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``python -m service ARGS`` on a free loopback port (``env``: extra ``DAT_*`` variables);
    returns the process and its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DAT_LOG_LEVEL": "info", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (the server drains and exits), killed if it has not exited within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(process: subprocess.Popen, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early ({process.returncode}): {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never became ready")

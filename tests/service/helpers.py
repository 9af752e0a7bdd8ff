"""Service test helpers: an instrumented backend, the app over real ASGI HTTP, images, and
``python -m service`` as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import torch
from PIL import Image

from service import Settings, create_app
from service.backends.torch import TorchBackend
from tests.tiny import TINY_CONFIG  # noqa: F401  (re-exported for the service tests)

LABELS = [f"digit {i}" for i in range(10)]
REPO = Path(__file__).resolve().parents[2]


class CountingBackend(TorchBackend):
    """The real torch backend, instrumented: every batch is recorded, a gate can hold the
    worker inside ``run`` (to keep requests queued), and batches can be made to fail."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__(model, device="cpu", precision="fp32", **kwargs)
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)  # released once per batch that starts
        self.fail_when: Callable[[torch.Tensor], bool] = lambda images: False
        self.load_gate = threading.Event()
        self.load_gate.set()

    def load(self):
        self.load_gate.wait(30)
        return super().load()

    def run(self, images, points=False):
        self.entered.release()
        if not self.gate.wait(10):
            raise RuntimeError("test gate never opened")
        if self.fail_when(images):
            raise RuntimeError("injected failure")
        self.batches.append(int(images.shape[0]))
        return super().run(images, points)

    @property
    def images_computed(self) -> int:
        return sum(self.batches)

    async def wait_entered(self, timeout: float = 10.0) -> None:
        if not await asyncio.to_thread(self.entered.acquire, True, timeout):
            raise AssertionError("no batch started")


def settings(**overrides) -> Settings:
    base = {"max_queue_delay_ms": 2.0, "preprocess_workers": 2, "warmup": False, "detector": "none"}
    return Settings(**{**base, **overrides})


@contextlib.asynccontextmanager
async def serve(app, *, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, behind httpx over ASGI (real HTTP semantics, no socket)."""
    async with app.router.lifespan_context(app):
        if wait_ready:
            await app.state.service.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


@contextlib.asynccontextmanager
async def served(backend: CountingBackend, **overrides) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(settings(**overrides), backend=backend)) as client:
        yield client


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls a condition on the server's own state (queue depth, ...), bounded in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def image_bytes(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def sample_png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A deterministic, non-uniform picture (different seeds give different predictions)."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
    return image_bytes(Image.fromarray(pixels, "RGB"))


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (0 when absent), so a
    check names only the labels it cares about (e.g. not the batcher's ``task``)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series[len(name) :]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


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

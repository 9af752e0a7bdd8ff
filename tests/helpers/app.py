"""The app in the test process: settings for tests, and the app served over real ASGI HTTP (no
socket)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx

from service import Settings, create_app
from tests.helpers.backends import CountingBackend


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

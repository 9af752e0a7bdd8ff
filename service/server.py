"""One server process: the app under uvicorn, draining gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from runtimes.allocator import keep_freed_memory

from .app import create_app
from .backends import BackendError
from .connections import http_protocol, raise_open_files_limit
from .runtime import ServiceState, keep_aten_serial
from .settings import Settings

if TYPE_CHECKING:
    from .frontend import InferenceLink

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    """uvicorn's graceful shutdown, plus: drain the service the moment the signal arrives,
    and exit normally afterwards (uvicorn would re-raise the signal, exiting -15)."""

    def __init__(self, config: uvicorn.Config, service: ServiceState) -> None:
        super().__init__(config)
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()  # before the signals are captured: none is missed
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self.should_exit:
            log.info("signal %s: shutting down gracefully", signal.Signals(sig).name)
            self._loop.call_soon_threadsafe(self.service.begin_drain)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(
    settings: Settings,
    sockets: list[socket.socket] | None = None,
    *,
    load_before_serving: bool = False,
    link: InferenceLink | None = None,
) -> int:
    """Runs until a signal (or a fatal load error); the process's exit status. ``link``: a
    front end's (``service.frontend``)."""
    if settings.switch_interval_ms:
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
    keep_aten_serial()  # this thread runs the event loop
    keep_freed_memory()  # before the model's first batch: no page faults for every large tensor
    try:
        app = create_app(settings, load_before_serving=load_before_serving, link=link)
    except BackendError as exc:
        log.error("cannot start: %s", exc)
        return 2
    service: ServiceState = app.state.service
    raise_open_files_limit(settings.max_connections)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        log_level=settings.log_level,
        # uvicorn annotates an int but hands it to asyncio.wait_for, which takes seconds as a float
        timeout_graceful_shutdown=settings.shutdown_timeout_s or None,  # type: ignore[arg-type]
        http=http_protocol(settings, service.metrics),
    )
    server = DrainingServer(config, service)

    def fatal(exc: BaseException) -> None:
        server.should_exit = True

    service.on_fatal = fatal
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn's own exit when startup failed (load_before_serving)
        if service.failure is None:
            raise
    if service.failure is not None:
        return 1
    return 0 if server.started else 1

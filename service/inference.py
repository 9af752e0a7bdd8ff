"""The inference process of ``--workers N`` (worker_mode frontends): one per device.

It owns the backends (models, CUDA graphs) and one batcher per model, fed by every front end
over a Unix socket (``service.wire``), the images read in place from each front end's shared
slots (``service.slots``). Deadlines, cancellation and the queue bound are the batcher's, as in
a single process; a request's slots are handed back (RELEASE) only once the batcher holds its
images no more, so a front end never overwrites images a batch is still reading.

Batch metrics (sizes, queue wait, inference time, queue depth) come from here, through the
prometheus multiprocess files every process of the server writes.

SIGTERM: the batchers finish what is queued, then the process exits 0 (the supervisor sends it
once every front end has drained). SIGINT is left to the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from models import CLASSIFICATION, DETECTION
from runtimes.allocator import keep_freed_memory

from . import wire
from .backends import BackendError, create_backend, create_detector_backend
from .errors import ClientDisconnected
from .logs import configure_logging
from .metrics import Metrics
from .model_runtime import ModelRuntime, keep_aten_serial
from .settings import Settings
from .slots import SlotRing
from .workers import exit_with_parent

log = logging.getLogger("service.inference")

_STATUS_INTERVAL_S = 0.1


class FrontEndLink:
    """One connected front end: its rings and its requests in the batchers."""

    def __init__(self, server: InferenceServer, writer: asyncio.StreamWriter, rings: dict[str, SlotRing]):
        self.server = server
        self.writer = writer
        self.rings = rings
        self.cancels: dict[int, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()

    def send(self, message: tuple) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.frame(message))

    def submit(self, message: tuple) -> None:
        _, rid, role, start, shapes, metas, deadline, want_points, request_id = message
        runtime = self.server.runtimes[role]
        ring = self.rings[role]
        loop = asyncio.get_running_loop()
        try:
            if metas is None:
                inputs: Any = ring.batch(start, len(shapes), shapes[0])
            else:
                images = [ring.image(start + i, shape) for i, shape in enumerate(shapes)]
                inputs = list(zip(images, metas))
            work = runtime.batcher.submit(
                inputs,
                deadline,
                want_points,
                request_id,
                on_release=lambda: self._release_soon(loop, rid),
            )
        except Exception as exc:  # noqa: BLE001 - refused at once (queue full, stopping): said back
            self.send((wire.RESULT, rid, None, wire.encode_error(exc)))
            self.send((wire.RELEASE, rid))
            return
        cancel = self.cancels[rid] = loop.create_future()
        task = asyncio.ensure_future(self._answer(runtime, work, rid, cancel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _release_soon(self, loop: asyncio.AbstractEventLoop, rid: int) -> None:
        loop.call_soon_threadsafe(self.send, (wire.RELEASE, rid))

    async def _answer(self, runtime: ModelRuntime, work: Any, rid: int, cancel: asyncio.Future) -> None:
        try:
            outputs = await runtime.batcher.result(work, cancel)
        except ClientDisconnected:
            return  # nobody waits for an answer
        except Exception as exc:  # noqa: BLE001 - deadline, failed batch, shutdown: said back
            self.send((wire.RESULT, rid, None, wire.encode_error(exc)))
        else:
            answer = (outputs, work.queue_s, work.inference_s, work.batch_size)
            self.send((wire.RESULT, rid, answer, None))
        finally:
            self.cancels.pop(rid, None)

    def cancel(self, rid: int) -> None:
        cancel = self.cancels.get(rid)
        if cancel is not None and not cancel.done():
            cancel.set_result(None)

    def close(self) -> None:
        """The front end went away: its requests are abandoned like disconnected clients'."""
        for rid in list(self.cancels):
            self.cancel(rid)
        self.writer.close()


class InferenceServer:
    def __init__(self, settings: Settings, socket_path: str) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.metrics = Metrics()
        self.runtimes: dict[str, ModelRuntime] = {
            CLASSIFICATION.name: ModelRuntime(
                create_backend(settings), settings, self.metrics, CLASSIFICATION
            )
        }
        detector = create_detector_backend(settings)
        if detector is not None:
            self.runtimes[DETECTION.name] = ModelRuntime(detector, settings, self.metrics, DETECTION)
        self.links: set[FrontEndLink] = set()
        self.stopping = asyncio.Event()

    async def run(self, on_loaded: Any = None) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        try:
            for runtime in self.runtimes.values():
                await asyncio.wrap_future(runtime.batcher.start())
        except BaseException as exc:  # noqa: BLE001 - reported, the exit status says it
            log.error("model failed to load: %s", exc)
            return 1
        self.metrics.ready.set(1)
        listener = self._listen()
        if on_loaded is not None:
            on_loaded()
        log.info("inference process ready", extra={"socket": self.socket_path})
        accepting = asyncio.ensure_future(self._accept(listener))
        publishing = asyncio.ensure_future(self._publish())
        await self.stopping.wait()
        log.info("inference process stopping", extra={"front_ends": len(self.links)})
        accepting.cancel()
        listener.close()
        for runtime in self.runtimes.values():
            runtime.batcher.drain()
            await asyncio.to_thread(runtime.batcher.stop, self.settings.shutdown_timeout_s)
            runtime.stop_decoding()
        await asyncio.sleep(0)  # the last answers reach the transports
        for link in list(self.links):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.writer.drain(), 1.0)
            link.close()
        publishing.cancel()
        self.metrics.ready.set(0)
        log.info("stopped")
        return 0

    def _listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen(64)
        listener.setblocking(False)
        return listener

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            asyncio.ensure_future(self._serve(conn))

    def _handshake(self, conn: socket.socket) -> dict[str, SlotRing]:
        """HELLO -> WELCOME, RINGS (+ descriptors) -> READY; blocking, on a thread."""
        conn.setblocking(True)
        (kind, pid), _ = wire.receive(conn)
        if kind != wire.HELLO:
            raise ConnectionError(f"expected HELLO, got {kind}")
        models = {role: (r.meta, r.backend.describe()) for role, r in self.runtimes.items()}
        wire.send(conn, (wire.WELCOME, models))
        message, fds = wire.receive(conn, max_fds=len(self.runtimes))
        if message[0] != wire.RINGS or len(fds) != len(message[1]):
            for fd in fds:
                os.close(fd)
            raise ConnectionError("expected RINGS with one descriptor per ring")
        rings = {}
        for fd, (role, (slots, elements)) in zip(fds, message[1].items()):
            rings[role] = SlotRing.attach(fd, slots, elements)
            if self.runtimes[role].backend.device.startswith("cuda"):
                rings[role].pin()
        wire.send(conn, (wire.READY,))
        conn.setblocking(False)
        log.info("front end connected", extra={"front_end_pid": pid})
        return rings

    async def _serve(self, conn: socket.socket) -> None:
        try:
            rings = await asyncio.to_thread(self._handshake, conn)
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except (OSError, ConnectionError, EOFError) as exc:
            log.warning("a front end failed to connect: %s", exc)
            conn.close()
            return
        link = FrontEndLink(self, writer, rings)
        self.links.add(link)
        try:
            while True:
                message = await wire.read(reader)
                if message[0] == wire.SUBMIT:
                    link.submit(message)
                elif message[0] == wire.CANCEL:
                    link.cancel(message[1])
                elif message[0] == wire.DRAIN:
                    for runtime in self.runtimes.values():
                        runtime.batcher.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.links.discard(link)
            link.close()

    async def _publish(self) -> None:
        """Each front end learns the queue depth and health of the batchers; the metrics gauges
        computed on demand go to this process's file."""
        last_refresh = 0.0
        while True:
            status = {role: self._status(r) for role, r in self.runtimes.items()}
            for link in list(self.links):
                link.send((wire.STATUS, status))
            if time.monotonic() - last_refresh > 1.0:
                self.metrics.refresh()
                last_refresh = time.monotonic()
            await asyncio.sleep(_STATUS_INTERVAL_S)

    def _status(self, runtime: ModelRuntime) -> wire.BatcherStatus:
        batcher = runtime.batcher
        return wire.BatcherStatus(
            batcher.queued_images,
            batcher.consecutive_failures,
            batcher.failing,
            batcher.last_error,
            batcher.liveness_problem(self.settings.stuck_batch_timeout_s),
        )


def main(argv: list[str], socket_path: str, loaded: Any = None) -> None:
    """The process's entry point (spawned by ``service.supervisor``); ``loaded``: an Event set
    once the models are loaded and the socket listens."""
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the supervisor decides
    settings = Settings(_cli_parse_args=argv)
    configure_logging(settings.log_level)
    keep_aten_serial()
    keep_freed_memory()  # as a single-process server (service.server.serve): this one runs the models
    try:
        server = InferenceServer(settings, socket_path)
    except BackendError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(2)
    sys.exit(asyncio.run(server.run(loaded.set if loaded is not None else None)))

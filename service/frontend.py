"""A front end of ``--workers N`` (worker_mode frontends): HTTP, decoding and preprocessing
here, inference in the one inference process of the device (``service.inference``).

:class:`InferenceLink` is the front end's connection to it: it writes each request's images
into this front end's shared slots (``service.slots``) and sends their place; the answer comes
back as a small message. To the routes nothing changes: each model is a ``ModelRuntime`` whose
backend describes the remote model and whose batcher (:class:`RemoteBatcher`) queues in the
inference process. A request is refused at once (503) when this front end's slots are taken or
the global queue is full (as last published by the inference process).

If the inference process goes away, every request waiting on it gets 503, readiness turns 503,
and the link connects again as soon as the supervisor has started a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from models import Task

from . import wire
from .backends.base import Backend, BackendError, ImageBatch, ImageOutput, ModelMeta
from .errors import ClientDisconnected, DeadlineExceeded, Unavailable
from .metrics import Metrics
from .model_runtime import ModelRuntime
from .settings import Settings
from .slots import SlotRing, slot_elements

log = logging.getLogger("service.frontend")

_RETRY_S = 0.1  # between attempts to reach the inference process
# an answer may be on its way when the deadline passes: wait this much longer for it
_ANSWER_GRACE_S = 0.05


class RemoteBackend(Backend):
    """The inference process's model as this front end sees it: meta and description only."""

    name = "remote"

    def adopt(self, meta: ModelMeta, description: dict[str, Any]) -> None:
        self.meta = meta
        self.description = description
        setattr(self, "name", description["backend"])  # noqa: B010 - the class's default, per instance
        self.device = description["device"]
        self.precision = description["precision"]
        self.supports_points = description["supports_points"]

    def load(self) -> ModelMeta:
        raise BackendError("a front end loads no model")

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput]:
        raise BackendError("a front end runs no model")

    def describe(self) -> dict[str, Any]:
        return dict(getattr(self, "description", None) or super().describe())


class RemoteWork:
    """A request queued in the inference process; its timings arrive with its outputs."""

    __slots__ = ("rid", "future", "deadline", "size", "queue_s", "inference_s", "batch_size")

    def __init__(self, rid: int, future: asyncio.Future, deadline: float, size: int) -> None:
        self.rid = rid
        self.future = future
        self.deadline = deadline
        self.size = size
        self.queue_s = self.inference_s = 0.0
        self.batch_size = 0


class RemoteBatcher:
    """The inference process's batcher as routes use it (a ``BatchQueue``), over the link: no
    queue and no thread live here."""

    def __init__(self, link: InferenceLink, role: Task, settings: Settings) -> None:
        self.link = link
        self.role = role.name
        self.max_batch_size = settings.max_batch_size
        self.max_queue_size = settings.max_queue_size
        self.probe_interval_s = settings.probe_interval_s

    def start(self) -> concurrent.futures.Future[None]:
        return self.link.start()

    def drain(self) -> None:
        """Shutdown has begun: the inference process's batches go without waiting (it stops
        once every front end has drained)."""
        self.link.drain()

    def stop(self, timeout: float | None = None) -> None:
        self.link.stop()

    @property
    def _status(self) -> wire.BatcherStatus | None:
        return self.link.status.get(self.role) if self.link.connected else None

    @property
    def queued_images(self) -> int:
        status = self._status
        return status.queued_images if status else 0

    @property
    def consecutive_failures(self) -> int:
        status = self._status
        return status.consecutive_failures if status else 0

    @property
    def last_error(self) -> str | None:
        status = self._status
        return status.last_error if status else None

    @property
    def failing(self) -> bool:
        status = self._status
        return status.failing if status else False

    def is_full(self) -> bool:
        ring = self.link.rings.get(self.role)
        return self.queued_images >= self.max_queue_size or (ring is not None and ring.free_slots == 0)

    def unavailable_reason(self) -> str | None:
        if self.link.connected:
            return None
        return "the inference process is not connected (starting or restarting)"

    def liveness_problem(self, stuck_after_s: float) -> tuple[str, str] | None:
        status = self._status
        return status.liveness if status else None

    def submit(
        self,
        inputs: ImageBatch,
        deadline: float,
        want_points: bool = False,
        request_id: str | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> RemoteWork:
        size = len(inputs)
        if not 1 <= size <= self.max_batch_size:
            raise ValueError(f"a request must have 1..{self.max_batch_size} images, got {size}")
        return self.link.submit(self.role, inputs, deadline, want_points, request_id)

    async def result(self, work: RemoteWork, disconnected: Awaitable[Any] | None = None) -> Any:
        watch = asyncio.ensure_future(disconnected) if disconnected is not None else None
        try:
            waiters: set[asyncio.Future] = {work.future} | ({watch} if watch else set())
            timeout = max(0.0, work.deadline - time.monotonic()) + _ANSWER_GRACE_S
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.link.cancel(work.rid)
            raise
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
        if work.future in done:
            outputs, work.queue_s, work.inference_s, work.batch_size = work.future.result()
            return outputs
        self.link.cancel(work.rid)
        if watch is not None and watch in done:
            raise ClientDisconnected()  # counted where it was queued
        raise DeadlineExceeded("the deadline passed before the inference process answered")


class InferenceLink:
    """This front end's connection to the inference process, and its slot rings."""

    def __init__(self, settings: Settings, socket_path: str) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.slots = settings.frontend_slots or settings.max_queue_size
        self.backends: dict[str, RemoteBackend] = {}
        self.rings: dict[str, SlotRing] = {}
        self.status: dict[str, wire.BatcherStatus] = {}
        self.connected = False
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._held: dict[int, tuple[str, int, int]] = {}  # request -> (role, first slot, slots)
        self._ids = itertools.count()
        self._task: asyncio.Task | None = None
        self._metrics: Metrics | None = None

    def runtime(self, role: Task, metrics: Metrics) -> ModelRuntime:
        """The route-facing model for ``role``, served through this link."""
        self._metrics = metrics
        backend = self.backends[role.name] = RemoteBackend()
        batcher = RemoteBatcher(self, role, self.settings)
        return ModelRuntime(backend, self.settings, metrics, role, batcher=batcher)

    # -- connection --------------------------------------------------------------------------------
    def start(self) -> concurrent.futures.Future[None]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return self.started

    def stop(self) -> None:
        """From any thread: the link closes (the server is stopping)."""
        task = self._task
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)

    def _handshake(self) -> socket.socket:
        """Blocking, on a thread: connect, learn the models, share the rings."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
            wire.send(sock, (wire.HELLO, os.getpid()))
            (kind, models), _ = wire.receive(sock)
            if kind != wire.WELCOME or set(models) != set(self.backends):
                raise ConnectionError(
                    f"the inference process serves {sorted(models)}, not {sorted(self.backends)}"
                )
            for role, (meta, description) in models.items():
                self.backends[role].adopt(meta, description)
                if role not in self.rings:
                    self.rings[role] = SlotRing.create(self.slots, slot_elements(meta.canvas or 1))
            specs = {role: (ring.slots, ring.elements) for role, ring in self.rings.items()}
            wire.send(sock, (wire.RINGS, specs), [ring.fd for ring in self.rings.values()])
            (kind, *_), _ = wire.receive(sock)
            if kind != wire.READY:
                raise ConnectionError(f"expected READY, got {kind}")
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _run(self) -> None:
        while True:
            try:
                sock = await asyncio.to_thread(self._handshake)
                reader, self._writer = await asyncio.open_unix_connection(sock=sock)
            except (OSError, ConnectionError, EOFError):
                await asyncio.sleep(_RETRY_S)
                continue
            self.connected = True
            self._set_ready(True)
            log.info("connected to the inference process")
            if not self.started.done():
                self.started.set_result(None)
            try:
                while True:
                    self._dispatch(await wire.read(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                log.error("lost the inference process: its requests get 503 until it is back")
            finally:
                self._disconnected()
            await asyncio.sleep(_RETRY_S)

    def _set_ready(self, ready: bool) -> None:
        if self._metrics is not None:
            self._metrics.ready.set(1 if ready else 0)

    def _disconnected(self) -> None:
        self.connected = False
        self._set_ready(False)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.status.clear()
        lost = Unavailable("the inference process stopped before this request ran; retry later")
        for rid in list(self._waiting):
            self._settle(rid, None, lost)
        for rid in list(self._held):  # the process that read them is gone
            self._release(rid)

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == wire.RESULT:
            _, rid, outputs, error = message
            self._settle(rid, outputs, None if error is None else wire.decode_error(error))
        elif kind == wire.RELEASE:
            self._release(message[1])
        elif kind == wire.STATUS:
            self.status = message[1]

    def _settle(self, rid: int, outputs: Any, error: BaseException | None) -> None:
        future = self._waiting.pop(rid, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outputs)

    def _release(self, rid: int) -> None:
        held = self._held.pop(rid, None)
        if held is not None:
            role, start, n = held
            self.rings[role].free(start, n)

    # -- requests ------------------------------------------------------------------------------------
    def submit(
        self, role: str, inputs: ImageBatch, deadline: float, want_points: bool, request_id: str | None
    ) -> RemoteWork:
        if not self.connected or self._writer is None:
            raise Unavailable("the inference process is not connected (starting or restarting); retry later")
        ring = self.rings[role]
        start = ring.allocate(len(inputs))
        if start is None:
            if self._metrics is not None:
                self._metrics.dropped.labels("queue_full").inc()
            raise Unavailable(
                f"overloaded: this front end's {ring.slots} image slots are taken "
                f"({ring.free_slots} free, {len(inputs)} needed); retry later"
            )
        try:
            if isinstance(inputs, list):
                shapes = ring.write(start, [tensor for tensor, _ in inputs])
                metas: list | None = [meta for _, meta in inputs]
            else:
                shapes = ring.write(start, inputs)
                metas = None
        except BaseException:
            ring.free(start, len(inputs))
            raise
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # read if abandoned
        self._held[rid] = (role, start, len(inputs))
        self._waiting[rid] = future
        self._writer.write(
            wire.frame((wire.SUBMIT, rid, role, start, shapes, metas, deadline, want_points, request_id))
        )
        return RemoteWork(rid, future, deadline, len(inputs))

    def drain(self) -> None:
        if self._writer is not None:
            self._writer.write(wire.frame((wire.DRAIN,)))

    def cancel(self, rid: int) -> None:
        """The caller stopped waiting: the inference process drops the request (its slots come
        back with its RELEASE)."""
        self._waiting.pop(rid, None)
        if self._writer is not None and rid in self._held:
            self._writer.write(wire.frame((wire.CANCEL, rid)))

"""The running service: served models (backend + batcher), the decode pool, readiness, drain.

Routes reach it through ``request.app.state.service``; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from models import CLASSIFICATION, DETECTION
from models.transforms import KeepRatioResize, expect_pipeline

from .backends import Backend, create_backend, create_detector_backend
from .backends.base import ImageBatch
from .batch_queue import QueuedWork
from .errors import BadImage, PayloadTooLarge, ServiceError, Unavailable
from .gpu_decode import GpuJpegDecoder, Refused, read_header
from .metrics import MULTIPROCESS, Metrics
from .model_runtime import ModelRuntime, host_path, keep_aten_serial
from .preprocess import Decoded, configure_pillow, keep_ratio_inputs, prepare, stack
from .settings import Settings
from .uploads import Upload

if TYPE_CHECKING:
    from .frontend import InferenceLink

__all__ = ["ModelRuntime", "ReadingShare", "ServiceState", "host_path", "keep_aten_serial"]

log = logging.getLogger("service")
T = TypeVar("T")


class ReadingShare:
    """One request's bytes in the reading budget (``ServiceState.reading``)."""

    def __init__(self, service: ServiceState) -> None:
        self.service = service
        self.bytes = 0

    def take(self, size: int) -> None:
        service = self.service
        if service.reading_bytes + size > service.settings.max_reading_bytes:
            service.metrics.dropped.labels("reading_budget").inc()
            raise Unavailable(
                f"overloaded: {service.reading_bytes:,} bytes of request bodies are being read; retry later"
            )
        self.bytes += size
        service.reading_bytes += size
        service.metrics.reading_bytes.set(service.reading_bytes)


class ServiceState:
    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        detector: Backend | None = None,
        link: InferenceLink | None = None,
    ) -> None:
        """``link``: a front end's, whose models run in the inference process."""
        self.settings = settings
        self.metrics = Metrics()
        self.detector: ModelRuntime | None
        if link is not None:
            self.classifier = link.runtime(CLASSIFICATION, self.metrics)
            self.detector = link.runtime(DETECTION, self.metrics) if settings.serves_detector else None
        else:
            self._local_runtimes(settings, backend, detector)
        self.ready = False
        self.draining = False
        self.failure: BaseException | None = None
        self.on_fatal: Callable[[BaseException], None] | None = None
        self.inflight = 0
        self.reading_requests = 0
        self.reading_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._loaded: asyncio.Future | None = None
        self._drain_begun = asyncio.Event()
        self._refresher: asyncio.Task | None = None

    def _local_runtimes(self, settings: Settings, backend: Backend | None, detector: Backend | None) -> None:
        self.classifier = ModelRuntime(
            backend or create_backend(settings), settings, self.metrics, CLASSIFICATION
        )
        detector = detector or create_detector_backend(settings)
        self.detector = (
            None if detector is None else ModelRuntime(detector, settings, self.metrics, DETECTION)
        )

    @property
    def runtimes(self) -> list[ModelRuntime]:
        return [self.classifier] + ([self.detector] if self.detector is not None else [])

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Starts loading in the background: the server answers /health/live meanwhile."""
        configure_pillow(self.settings.max_image_pixels)
        self._pool = ThreadPoolExecutor(
            self.settings.preprocess_workers, thread_name_prefix="preprocess", initializer=keep_aten_serial
        )
        self._loaded = asyncio.ensure_future(self._load())
        if MULTIPROCESS:
            self._refresher = asyncio.ensure_future(self._refresh_metrics())

    async def _refresh_metrics(self) -> None:
        """--workers: this worker's computed gauges, written every second for any worker's scrape."""
        while True:
            self.metrics.refresh()
            await asyncio.sleep(1.0)

    async def _load(self) -> None:
        try:
            # the host path's compiled kernels, on a decoding thread while the models load
            warming = asyncio.get_running_loop().run_in_executor(self._pool, self._warm_host_paths)
            for runtime in self.runtimes:
                await asyncio.wrap_future(runtime.batcher.start())
            await warming
        except asyncio.CancelledError:  # stopped before it loaded: not a failure
            raise
        except BaseException as exc:
            self.failure = exc
            log.error("model failed to load: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            return
        self.ready = not self.draining
        self.metrics.ready.set(1 if self.ready else 0)
        log.info("ready")

    def _warm_host_paths(self) -> None:
        for runtime in self.runtimes:
            runtime.warm_host_path()

    async def wait_ready(self) -> None:
        """Waits for loading to end, or for a drain to begin (a front end's inference process
        may never come: waiting on would ignore the signal); raises what made loading fail."""
        if self._loaded is not None:
            drain = asyncio.ensure_future(self._drain_begun.wait())
            try:
                await asyncio.wait([self._loaded, drain], return_when=asyncio.FIRST_COMPLETED)
            finally:
                drain.cancel()
        if self.failure is not None:
            raise self.failure

    def begin_drain(self) -> None:
        """Shutdown has begun: readiness turns 503, new work is refused, queues flush now."""
        if self.draining:
            return
        self.draining = True
        self._drain_begun.set()
        self.ready = False
        self.metrics.ready.set(0)
        for runtime in self.runtimes:
            runtime.batcher.drain()
        log.info("draining", extra={"inflight": self.inflight})

    async def stop(self) -> None:
        self.begin_drain()
        if self._loaded is not None and not self._loaded.done():
            self._loaded.cancel()
        if self._refresher is not None:
            self._refresher.cancel()
        for runtime in self.runtimes:
            await asyncio.to_thread(runtime.batcher.stop, self.settings.shutdown_timeout_s)
            runtime.stop_decoding()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")

    # -- requests ------------------------------------------------------------------------
    def not_ready(self, runtime: ModelRuntime | None = None) -> tuple[str, str] | None:
        """Why the server (or one model of it) should get no traffic: (status, detail), status
        draining, failed, loading, dead or failing; None when ready."""
        if self.draining:
            return "draining", "the server is shutting down"
        if self.failure is not None:
            return "failed", f"the model failed to load: {self.failure}"
        if not self.ready:
            return "loading", "the model is loading and warming up"
        runtimes = self.runtimes if runtime is None else [runtime]
        for status, problems in (
            ("dead", [live[1] for r in runtimes if (live := r.liveness_problem()) and live[0] == "dead"]),
            ("failing", [ready for r in runtimes if (ready := r.readiness_problem())]),
        ):
            if problems:
                return status, "; ".join(problems)
        return None

    def liveness_problem(self) -> tuple[str, str] | None:
        """The first inference thread that died or is stuck in one batch: ("dead" | "stuck", why)."""
        return next((p for r in self.runtimes if (p := r.liveness_problem())), None)

    def check_ready(self) -> None:
        if self.draining:
            raise Unavailable("the server is shutting down")
        if not self.ready:
            raise Unavailable(
                "the model is not loaded yet" if self.failure is None else "the model failed to load"
            )

    def check_admission(self, runtime: ModelRuntime) -> None:
        """Refuses at once (503) a request that ``admit`` would refuse now: called before the
        body is read too, so that an overloaded server does not read bodies only to refuse them."""
        self.check_ready()
        if self.inflight >= self.settings.max_inflight_requests:
            self.metrics.dropped.labels("overloaded").inc()
            raise Unavailable(f"overloaded: {self.inflight} requests in flight; retry later")
        if runtime.batcher.is_full():
            self.metrics.dropped.labels("queue_full").inc()
            raise Unavailable("overloaded: the batch queue is full; retry later")

    @contextlib.contextmanager
    def reading(self) -> Iterator[ReadingShare]:
        """A request reading its body: counted apart from compute, its bytes held against
        ``max_reading_bytes`` until it is read (or fails)."""
        share = ReadingShare(self)
        self.reading_requests += 1
        self.metrics.reading.set(self.reading_requests)
        try:
            yield share
        finally:
            self.reading_requests -= 1
            self.reading_bytes -= share.bytes
            self.metrics.reading.set(self.reading_requests)
            self.metrics.reading_bytes.set(self.reading_bytes)

    @contextlib.asynccontextmanager
    async def admit(self, runtime: ModelRuntime) -> AsyncIterator[None]:
        """Admission to compute (decoding, the queue, the batch), once the body is complete:
        a client still sending holds no slot. Refuses at once when over capacity."""
        self.check_admission(runtime)
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)
        try:
            yield
        finally:
            self.inflight -= 1
            self.metrics.inflight.set(self.inflight)

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs CPU-heavy request work (parsing a large body, converting tensors) on the
        preprocessing pool, so the event loop keeps serving other requests meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def preprocess(self, runtime: ModelRuntime, uploads: Sequence[Upload]) -> list[Decoded]:
        """Decodes the images in parallel on the pool; the first failure names its image."""
        started = time.monotonic()
        jobs: list[Awaitable[Decoded]]
        if runtime.jpeg_decoder is None:
            jobs = [self._prepare_with_pillow(runtime, u.data) for u in uploads]
        else:
            jobs = [self._prepare_on_gpu(runtime, runtime.jpeg_decoder, u.data) for u in uploads]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        self.metrics.preprocess.observe(time.monotonic() - started)
        for i, result in enumerate(results):
            if isinstance(result, ServiceError):
                if len(uploads) > 1 or uploads[i].filename:
                    name = f" ({uploads[i].filename})" if uploads[i].filename else ""
                    result.message = f"image {i}{name}: {result.message}"
                raise result
            if isinstance(result, BaseException):
                if isinstance(result, MemoryError):
                    raise PayloadTooLarge(f"image {i} is too large to decode") from result
                raise BadImage(f"image {i}: cannot be processed ({type(result).__name__})") from result
        return results  # type: ignore[return-value]

    def _prepare_with_pillow(self, runtime: ModelRuntime, data: bytes) -> asyncio.Future[Decoded]:
        return asyncio.get_running_loop().run_in_executor(
            self._pool,
            prepare,
            data,
            runtime.meta.preprocessing,
            self.settings.max_image_pixels,
            runtime.preprocess_device,
            runtime.host_path,
        )

    async def _prepare_on_gpu(self, runtime: ModelRuntime, decoder: GpuJpegDecoder, data: bytes) -> Decoded:
        """``--gpu-decode``: the header read on the pool, then the GPU decoder; Pillow for the
        images it does not take or refuses."""
        loop = asyncio.get_running_loop()
        header = await loop.run_in_executor(self._pool, read_header, data, self.settings.max_image_pixels)
        if header is not None:
            try:
                tensor = await asyncio.wrap_future(decoder.submit(data, header))
                return Decoded(tensor, header.width, header.height, "JPEG")
            except Refused:
                pass
        return await self._prepare_with_pillow(runtime, data)

    def submit(
        self,
        runtime: ModelRuntime,
        decoded: Sequence[Decoded],
        deadline: float,
        want_points: bool,
        request_id: str | None,
    ) -> QueuedWork:
        meta = runtime.meta
        inputs = (
            keep_ratio_inputs(decoded, expect_pipeline(meta.preprocessing, KeepRatioResize))
            if meta.keeps_ratio
            else stack(decoded)
        )
        return self.submit_tensor(runtime, inputs, deadline, want_points, request_id)

    def submit_tensor(
        self,
        runtime: ModelRuntime,
        inputs: ImageBatch,
        deadline: float,
        want_points: bool,
        request_id: str | None,
    ) -> QueuedWork:
        """Queues model inputs: float32 (N, 3, S, S), S the model's size, or a keep-ratio
        detector's list of inputs."""
        size = runtime.meta.input_size
        if isinstance(inputs, list):
            if not runtime.meta.keeps_ratio:
                raise ValueError(f"expected float32 (N, 3, {size}, {size}), got a list of images")
        elif inputs.dtype != torch.float32 or tuple(inputs.shape[1:]) != (3, size, size):
            raise ValueError(
                f"expected float32 (N, 3, {size}, {size}), got {inputs.dtype} {tuple(inputs.shape)}"
            )
        return runtime.batcher.submit(inputs, deadline, want_points, request_id)

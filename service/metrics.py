"""Prometheus metrics, one registry per app (so several apps can live in one process).

With ``--workers N`` every worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, chosen when the variable is set before the library is
imported: ``service.workers`` sets it for the workers), and /metrics sums them all, whichever
worker answers. Gauges say how: ``livesum`` (queue depth, requests in flight: the HPA's
metrics), ``livemin`` for readiness (1 only when every worker is ready).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

# True in a worker of --workers N: every value lives in a per-process file
MULTIPROCESS = bool(getattr(values.ValueClass, "_multiprocess", False))

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
_RATE_WINDOW_S = 10.0


class _Throughput:
    """Images finished over the last few seconds, for a gauge read at scrape time."""

    def __init__(self, window_s: float = _RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, images: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._events.append((now, images))
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._events) / self.window_s

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "dat_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "dat_request_duration_seconds",
            "total time of a request in the server",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Per batcher: one for the classifier, one for the detector (label ``task``).
        self.queue_wait = Histogram(
            "dat_queue_wait_seconds",
            "time a request waited in the batch queue",
            ["task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess = Histogram(
            "dat_preprocess_seconds",
            "decode + resize + normalise of one request's images",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "dat_inference_seconds",
            "backend time of one batch",
            ["task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "dat_batch_size", "images per forward pass", ["task"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_images = Gauge(
            "dat_queue_images",
            "images waiting in the batch queue",
            ["task"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.queue_requests = Gauge(
            "dat_queue_requests",
            "requests waiting in the batch queue",
            ["task"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.inflight = Gauge(
            "dat_inflight_requests",
            "requests decoded, queued or run (their bodies complete)",
            multiprocess_mode="livesum",
            registry=r,
        )
        # Reading is budgeted apart from compute: a slow client holds a connection, not a slot.
        self.reading = Gauge(
            "dat_reading_requests",
            "requests whose bodies are being read",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.reading_bytes = Gauge(
            "dat_reading_bytes",
            "body bytes received by requests still being read",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.open_connections = Gauge(
            "dat_open_connections", "open HTTP connections", multiprocess_mode="livesum", registry=r
        )
        self.closed_connections = Counter(
            "dat_closed_connections",
            "connections the server closed "
            "or refused, by reason (header_timeout, body_timeout, "
            "header_too_large, evicted, connection_limit)",
            ["reason"],
            registry=r,
        )
        self.images = Counter("dat_inference_images", "images run through the backend", ["task"], registry=r)
        self.batches = Counter("dat_batches", "forward passes by outcome", ["task", "outcome"], registry=r)
        self.dropped = Counter(
            "dat_dropped_requests",
            "requests never computed, by reason (queue_full, overloaded, "
            "reading_budget, deadline, disconnected, shutdown)",
            ["reason"],
            registry=r,
        )
        self.gpu_decode_batch_size = Histogram(
            "dat_gpu_decode_batch_size",
            "JPEGs per call of the GPU decoder (--gpu-decode)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.gpu_decode_images = Counter(
            "dat_gpu_decode_images",
            "JPEGs given to the GPU decoder, by outcome (decoded, or refused and left to Pillow)",
            ["outcome"],
            registry=r,
        )
        self.ready = Gauge(
            "dat_ready",
            "1 when the model is loaded and warmed up (with --workers, every worker)",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.simulated_ips = Gauge(
            "dat_simulated_backend_images_per_second",
            "present only with --backend simulated: the speed the simulated "
            "accelerator pretends to; no model runs and every output is zeros",
            ["task"],
            multiprocess_mode="max",
            registry=r,
        )
        self.throughput = _Throughput()
        self.images_per_second = Gauge(
            "dat_images_per_second",
            f"images computed per second over the last {_RATE_WINDOW_S:g} s",
            multiprocess_mode="livesum",
            registry=r,
        )
        if not MULTIPROCESS:  # read at scrape time; a worker's file is written by refresh()
            self.images_per_second.set_function(self.throughput.rate)

    def observe_gpu_decode(self, images: int, refused: int) -> None:
        self.gpu_decode_batch_size.observe(images)
        self.gpu_decode_images.labels("decoded").inc(images - refused)
        if refused:
            self.gpu_decode_images.labels("refused").inc(refused)

    def for_task(self, task: str) -> BatcherMetrics:
        return BatcherMetrics(self, task)

    def refresh(self) -> None:
        """Writes the values computed on demand to this worker's file (multiprocess mode: the
        worker answering a scrape cannot compute the others')."""
        if MULTIPROCESS:
            self.images_per_second.set(self.throughput.rate())

    def render(self) -> bytes:
        if not MULTIPROCESS:
            return generate_latest(self.registry)
        self.refresh()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # every worker's files, live or gone
        return generate_latest(registry)


class BatcherMetrics:
    """What one batcher reports, labelled with its task; drops are counted by reason only."""

    def __init__(self, metrics: Metrics, task: str) -> None:
        self._metrics = metrics
        self.task = task
        self.queue_wait = metrics.queue_wait.labels(task)
        self.queue_images = metrics.queue_images.labels(task)
        self.queue_requests = metrics.queue_requests.labels(task)
        self.dropped = metrics.dropped
        self._batch_size = metrics.batch_size.labels(task)
        self._inference = metrics.inference.labels(task)
        self._images = metrics.images.labels(task)

    def observe_batch(self, size: int, seconds: float, ok: bool) -> None:
        self._metrics.batches.labels(self.task, "ok" if ok else "error").inc()
        self._batch_size.observe(size)
        self._inference.observe(seconds)
        if ok:
            self._images.inc(size)
            self._metrics.throughput.add(size)

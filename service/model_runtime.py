"""One served model (``ModelRuntime``): its backend, the batcher that owns it, its preprocessing
path; ``service.runtime`` holds the runtimes of a server (and names these too)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, TypeVar

import torch

from models import Preprocessing, Task
from models.transforms import pillow_resample

from . import jpeg
from .backends import Backend, BackendError, ModelMeta
from .batch_queue import BatchQueue
from .batcher import Batcher
from .errors import Unavailable
from .gpu_decode import GpuJpegDecoder, torchvision_decoder
from .metrics import Metrics
from .preprocess import HostPath
from .settings import Settings
from .tasks import SERVED, served

log = logging.getLogger("service")
T = TypeVar("T")


def keep_aten_serial() -> None:
    """ATen ops run on the calling thread alone, never on an OpenMP team of its own.

    Each thread that runs a parallel ATen op (stacking a request's images is one) gets its own
    OpenMP team. Once the teams hold more threads than there are cores, libgomp stops spinning
    at barriers, and the inference threads sleep and wake at every op: a saturated server left
    part of its CPU idle (docs/benchmarks.md). Only the inference threads should own teams: the decoding
    threads call this, and so does ``python -m service`` on its event loop.
    """
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    # at::set_num_threads also sets the count that threads yet to run ATen start with; a
    # short-lived thread puts that back (a thread's own count stays with the thread).
    restore = threading.Thread(target=torch.set_num_threads, args=(default,))
    restore.start()
    restore.join()


def host_path(settings: Settings) -> HostPath:
    """The CPU decoder and resize the settings ask for (auto: simplejpeg and numba where
    installed)."""
    decoder, resize = settings.jpeg_decoder, settings.cpu_resize
    if decoder == "auto":
        decoder = "simplejpeg" if jpeg.available() else "pillow"
    if resize == "auto":
        resize = "numba" if pillow_resample.available() else "pillow"
    return HostPath(decoder, resize, settings.jpeg_draft)


class ModelRuntime:
    """One model: its backend, owned by the batcher's worker thread. ``role`` is the slot it
    fills: the classifier (CLASSIFICATION) or the detector (DETECTION), which takes the tasks
    whose served task has that role (``service.tasks``); its name labels the metrics and the
    inference thread."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        metrics: Metrics,
        role: Task,
        batcher: BatchQueue[Any] | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.role = role
        self.metrics = metrics
        self.preprocess_device: torch.device | None = None  # None: on the CPU, as host_path says
        self.host_path = host_path(settings)
        self.jpeg_decoder: GpuJpegDecoder | None = None  # --gpu-decode
        self.batcher: BatchQueue[Any] = batcher or Batcher(
            backend.run,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_s,
            max_queue_size=settings.max_queue_size,
            metrics=metrics,
            task=role.name,
            setup=self._setup,
            name=f"inference-{role.name}",
            unhealthy_after=settings.unhealthy_after_failures,
            probe=self._probe,
            probe_interval_s=settings.probe_interval_s,
        )

    def warm_host_path(self) -> None:
        """Compiles the host path's kernels now, so that no request waits for them. Under
        --cpu-resize auto a compiled resize that cannot be built (numba broken by a NumPy it
        does not support, say) gives way to Pillow's, which computes the same values more
        slowly: a missing speed-up is no reason not to serve. Asked for by name, it fails the start."""
        try:
            self.host_path.warm()
        except Exception as exc:  # noqa: BLE001 - numba's import and compile errors are many
            reason = f"the compiled resize cannot be built ({type(exc).__name__}: {exc})"
            if self.settings.cpu_resize != "auto":
                raise RuntimeError(f"--cpu-resize numba: {reason}") from exc
            log.warning("%s; resizing with Pillow, the same values, slower", reason)
            self.host_path = dataclasses.replace(self.host_path, resize="pillow")

    def _setup(self) -> None:  # on the inference thread
        started = time.monotonic()
        meta = self.backend.load()
        self._check_role(meta)
        simulated = getattr(self.backend, "images_per_second", None)  # --backend simulated
        if simulated is not None:  # named as a simulation in /metrics, as in /models
            self.metrics.simulated_ips.labels(self.role.name).set(simulated)
            torch.set_num_threads(1)  # it copies batches, computes none: no OpenMP team to spin
        self.preprocess_device = self._preprocess_device(meta)
        if self.settings.gpu_decode and served(meta.task).gpu_decode:
            self.jpeg_decoder = self._start_jpeg_decoder(meta)
        if self.settings.warmup:
            # Every batch size the batcher can form: oneDNN / cuDNN / ORT pick and build kernels
            # per shape, and a first call at a new size costs far more than a warm one.
            self.backend.warmup(range(1, self.settings.max_batch_size + 1))
        log.info(
            "model loaded",
            extra={
                "model": meta.name,
                "version": meta.version,
                "seconds": round(time.monotonic() - started, 3),
                **self.backend.describe(),
            },
        )

    def _check_role(self, meta: ModelMeta) -> None:
        task = SERVED.get(meta.task.name)
        if task is None or task.role is not self.role:
            raise BackendError(
                f"{meta.name} is a {meta.task} model; it cannot serve as the {self.role.name} model"
            )

    @property
    def task(self) -> Task:
        """The loaded model's task (the role's until it is loaded)."""
        meta = self.backend.meta
        return meta.task if meta is not None else self.role

    def _probe(self) -> None:  # on the inference thread, while failing and idle
        self.backend.run(self.backend.sample_batch(1))

    def readiness_problem(self) -> str | None:
        """Why this model is not fit to serve although loaded (None: it is)."""
        batcher = self.batcher
        unavailable = batcher.unavailable_reason()
        if unavailable is not None:
            return f"{self.role.name} model: {unavailable}"
        if not batcher.failing:
            return None
        return (
            f"{self.role.name} model: {batcher.consecutive_failures} consecutive batches failed "
            f"(last: {batcher.last_error}); a probe batch tries again every "
            f"{batcher.probe_interval_s:g} s"
        )

    def liveness_problem(self) -> tuple[str, str] | None:
        """("dead" | "stuck", why) for the inference thread (None: it works)."""
        problem = self.batcher.liveness_problem(self.settings.stuck_batch_timeout_s)
        return (
            None if problem is None else (problem[0], f"the {self.role.name} inference thread {problem[1]}")
        )

    def _preprocess_device(self, meta: ModelMeta) -> torch.device | None:
        """The model's GPU when ``--gpu-preprocess`` or ``--gpu-decode`` asks for it and the
        model's transform runs on tensors; None keeps Pillow on the CPU."""
        device = torch.device(self.backend.device)
        wanted = self.settings.gpu_preprocess or self.settings.gpu_decode
        if not (
            wanted
            and device.type == "cuda"
            and self.backend.takes_device_inputs
            and isinstance(meta.preprocessing, Preprocessing)
            and meta.preprocessing.runs_on_tensors
        ):
            return None
        return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())

    def _start_jpeg_decoder(self, meta: ModelMeta) -> GpuJpegDecoder | None:
        if self.preprocess_device is None or not isinstance(meta.preprocessing, Preprocessing):
            log.warning(
                "--gpu-decode needs a classifier on a GPU whose preprocessing runs on "
                "tensors: Pillow decodes its images"
            )
            return None
        try:
            decode = torchvision_decoder(self.preprocess_device)
        except ImportError as exc:
            raise RuntimeError(f"--gpu-decode needs torchvision built with nvJPEG ({exc})") from exc
        decoder = GpuJpegDecoder(
            meta.preprocessing, self.preprocess_device, decode, on_batch=self.metrics.observe_gpu_decode
        ).start()
        try:
            decoder.warm_up()
        except BaseException:
            decoder.stop(timeout=5.0)
            raise
        return decoder

    def stop_decoding(self) -> None:
        if self.jpeg_decoder is not None:
            self.jpeg_decoder.stop(timeout=5.0)

    @property
    def meta(self) -> ModelMeta:
        if self.backend.meta is None:
            raise Unavailable("the model is still loading")
        return self.backend.meta

    def describe(self, ready: bool) -> dict[str, Any]:
        s = self.settings
        meta = self.backend.meta
        return {
            "name": meta.name if meta else None,
            "task": self.task.name,
            "ready": ready,
            "version": meta.version if meta else None,
            **self.backend.describe(),
            "input_size": meta.input_size if meta else None,
            "num_labels": len(meta.labels) if meta else None,
            "preprocessing": meta.preprocessing.to_dict() if meta else None,
            "preprocessing_device": str(self.preprocess_device or "cpu"),
            "host_path": {
                "jpeg_decoder": self.host_path.jpeg_decoder,
                "resize": self.host_path.resize,
                "jpeg_draft": self.host_path.jpeg_draft,
            },
            "gpu_decode": None
            if self.jpeg_decoder is None
            else {
                "calls": self.jpeg_decoder.calls,
                "images": self.jpeg_decoder.images,
                "refused": self.jpeg_decoder.refused,
            },
            "batching": {
                "max_batch_size": s.max_batch_size,
                "max_queue_delay_ms": s.max_queue_delay_ms,
                "max_queue_size": s.max_queue_size,
                "default_timeout_ms": s.default_timeout_ms,
                "max_images_per_request": s.max_images_per_request,
            },
        }

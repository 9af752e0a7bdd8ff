"""Every knob of the server, in one place.

Values come from (highest first) CLI flags, ``DAT_*`` environment variables, then the
defaults below. ``python -m service --help`` lists them; Docker/compose set env vars only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import TypeAliasType

Backend = Literal["auto", "torch", "onnxruntime", "tensorrt", "simulated"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]


CPU_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
DEFAULT_WORKERS = max(1, min(4, CPU_CORES))
# A secret (shown as '**********' in reprs, dumps and logs); the name is --help's metavar, which
# a type checker sees as a misnamed alias: to it, the plain type.
if TYPE_CHECKING:
    ApiKeys = SecretStr
else:
    ApiKeys = TypeAliasType("KEY[,KEY...]", SecretStr)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DAT_",
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_show_env_vars=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )  # an error would otherwise print every setting, API keys too

    # -- network -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="interface to bind (0.0.0.0 inside a container)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")

    # -- model and backend ---------------------------------------------------------------
    model: str = Field(
        "dat_digits",
        description="registered model name or a DAT config file "
        "(official YAML, or JSON with a 'config' mapping), served by torch or exported on CPU",
    )
    checkpoint: Path | None = Field(
        None,
        description="weights for --model (official .pth or "
        ".safetensors); default: the model's embedded weights",
    )
    labels: Path | None = Field(None, description="label file, one class name per line")
    artifacts: Path | None = Field(
        None,
        description="folder written by 'python -m export' (its "
        "manifest names the ONNX model / TensorRT engine)",
    )
    backend: Backend = Field(
        "auto",
        description="auto: with --artifacts tensorrt (GPU + engine) "
        "or onnxruntime; else torch, except on CPU for the default model, "
        "measured fastest under onnxruntime (exported once into --export-cache). "
        "simulated: no model runs, a batch sleeps batch / --simulated-ips and "
        "answers zeros (the detector's too): what the host can feed a GPU",
    )
    simulated_ips: float = Field(
        5000.0,
        gt=0,
        description="--backend simulated: the images per second the simulated "
        "accelerator computes (a batch of n takes n / this, without using the CPU)",
    )
    detector: str = Field(
        "dat_digits_detector",
        description="detector served at /detect: a registered name (RetinaNet on DAT, or a release's "
        "Mask R-CNN / Cascade Mask R-CNN / RetinaNet) or an mmdet 2.x config file (read as data, "
        "never run), or 'none' for no /detect",
    )
    detector_checkpoint: Path | None = Field(
        None,
        description="weights for --detector: an mmdet checkpoint (.pth holding {'state_dict': ...}) "
        "or .safetensors; default: embedded",
    )
    detector_artifacts: Path | None = Field(
        None,
        description="a detector's 'python -m export' "
        "folder, served by tensorrt (GPU + engine) or onnxruntime "
        "instead of torch (ignored with --detector none)",
    )
    device: str = Field(
        "auto",
        description="cpu, cuda or cuda:N; auto: cuda:0 when PyTorch sees "
        "a GPU, else cpu. Normalised at start-up: cuda means cuda:0, an index must "
        "name a GPU that is present",
    )
    precision: Precision = Field(
        "auto",
        description="torch: auto is fp16 on CUDA, fp32 on CPU "
        "(bf16 weights are opt-in: faster for large models on AMX CPUs); "
        "artifacts keep their manifest's precision",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op CPU threads of a CPU backend "
        "(default: half the cores, at least 1: the rest decode images and "
        "serve HTTP; all cores collapsed throughput under load, measured)",
    )
    cuda_graphs: bool = Field(
        True,
        description="torch on CUDA: capture the forward as CUDA graphs "
        "per batch-size bucket at warm-up, checked against eager (one launch "
        "per batch instead of one per kernel; gains most at small batches)",
    )
    torch_compile: bool = Field(
        False,
        description="torch on CUDA with --cuda-graphs: the largest "
        "batch's graph replays the forward compiled by torch.compile "
        "(inductor; one compile at start-up), checked "
        "against eager; uncompiled graphs if it fails (inductor fuses the "
        "memory-bound glue between the matmuls)",
    )
    auto_export: bool = Field(
        True,
        description="let backend auto export the default model to "
        "ONNX on CPU (once, cached) because it runs fastest there",
    )
    export_cache: Path | None = Field(
        None,
        description="folder for those exports (default: $XDG_CACHE_HOME or ~/.cache, then dat-serve/exports)",
    )
    warmup: bool = Field(
        True,
        description="run every batch size 1..max before ready (kernels are "
        "built per shape: a batch of a size not seen yet is slow)",
    )

    # -- dynamic batching (Triton's semantics) -------------------------------------------
    max_batch_size: int = Field(
        16, ge=1, description="images per forward pass (a request with 4 images counts 4)"
    )
    max_queue_delay_ms: float = Field(
        5.0, ge=0, description="longest wait for a batch to fill, measured from its oldest request"
    )
    max_queue_size: int = Field(
        64,
        ge=1,
        description="images waiting in the queue; beyond it requests get 503 with Retry-After at once",
    )
    default_timeout_ms: int = Field(
        10_000,
        ge=1,
        description="per-request deadline; a client may only shorten it (timeout_ms / X-Timeout-Ms)",
    )
    max_inflight_requests: int = Field(
        128,
        ge=1,
        description="requests decoding, queued or "
        "running at once, admitted only once their bodies are "
        "complete (a request still being read holds no slot); "
        "beyond it 503",
    )

    # -- connections and reading ---------------------------------------------------------
    header_timeout_s: float = Field(
        20.0,
        gt=0,
        description="a request's head (request line and "
        "headers) must arrive within this of the connection opening "
        "or of its first byte, else 408 and the connection closes "
        "(a deadline: bytes now and then do not extend it). Apache's "
        "mod_reqtimeout first figure; nginx waits 60 s between reads",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="a request's body must arrive within "
        "this of its head, whether or not the route reads it, else 408 "
        "and the connection closes (nginx's client_body_timeout, here a "
        "deadline for the whole body). Inference also ends reading at "
        "its request deadline (--default-timeout-ms)",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="open HTTP connections per server "
        "process; a new one beyond it gets 503 with Retry-After at once "
        "(the open files limit is raised to fit)",
    )
    max_reading_bytes: int = Field(
        512 * 2**20,
        ge=1024,
        description="body bytes received by "
        "requests still being read, all together: reading's own "
        "budget, apart from compute's; a body that would pass it gets "
        "503",
    )

    # -- input limits --------------------------------------------------------------------
    max_body_bytes: int = Field(20 * 2**20, ge=1024, description="request body limit (413)")
    max_images_per_request: int = Field(8, ge=1, description="images in one request (413)")
    max_response_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="largest /detect response body, masks included (413 beyond: ask for fewer "
        "detections, a higher score_threshold or another mask format)",
    )
    max_mask_pixels: int = Field(
        200_000_000,
        ge=1,
        description="instance masks one /detect request may paste: its detections times their "
        "images' width*height, counted before any is pasted (413 beyond: fewer detections or "
        "smaller images); the deadline also stops the pasting (504)",
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="width*height of one image, read from its header before decoding (413)"
    )
    preprocess_workers: int = Field(
        DEFAULT_WORKERS,
        ge=1,
        description="threads decoding and resizing images (default: CPU cores, at most 4)",
    )
    gpu_preprocess: bool = Field(
        False,
        description="resize, crop and normalise a classifier's "
        "images on its GPU, when it runs on one (decoding stays on the "
        "CPU; agrees with Pillow to one level in 255). Slower than Pillow "
        "for small JPEGs on an H100 host (its copies and launches cost "
        "more CPU than the resize): it pays only where resizing large "
        "images dominates",
    )
    gpu_decode: bool = Field(
        False,
        description="decode a classifier's baseline JPEGs on its GPU, "
        "many requests' images per call (nvJPEG through torchvision, which "
        "must be installed), then preprocess there as --gpu-preprocess; "
        "other images, and JPEGs nvJPEG refuses, are decoded by Pillow. "
        "nvJPEG's pixels are not bit-identical to Pillow's",
    )
    jpeg_decoder: Literal["auto", "simplejpeg", "pillow"] = Field(
        "auto",
        description="CPU decoder of colour JPEGs: simplejpeg "
        "(libjpeg-turbo straight into an array: Pillow's pixels bit for bit, "
        "about 0.6 of its time), pillow, or auto: simplejpeg where installed. "
        "Other images are decoded by Pillow",
    )
    cpu_resize: Literal["auto", "numba", "pillow", "torch"] = Field(
        "auto",
        description="CPU resize of a classifier's images: numba (Pillow's "
        "resampling arithmetic compiled, only the centre crop computed: the "
        "official transform bit for bit, about 4x faster than Pillow), pillow "
        "(Pillow itself), torch (its uint8 antialiased kernels: faster still, "
        "within one level in 255 of Pillow on photos, two on hard synthetic "
        "edges; the default model's probabilities moved by up to 1.4e-2 on "
        "noise images, measured), or auto: numba where installed (pillow, with a warning, where it "
        "cannot be built), else pillow",
    )
    jpeg_draft: bool = Field(
        False,
        description="decode a JPEG at least twice the classifier's resize size "
        "at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's draft) "
        "before resizing: 5-7x faster for a 2000x1500 photo, but its inputs "
        "moved by up to 11 levels in 255 (10% of values) and the default "
        "model's probabilities by 4.5e-2, measured",
    )
    allow_points: bool = Field(
        True, description="let clients ask for the D blocks' sampling points (?points=true)"
    )

    # -- health --------------------------------------------------------------------------
    unhealthy_after_failures: int = Field(
        3,
        ge=1,
        description="consecutive failed batches after "
        "which /health/ready and the v2 ready endpoints answer "
        "503 with the reason, until a batch or a probe succeeds",
    )
    probe_interval_s: float = Field(
        5.0,
        gt=0,
        description="while a model is failing and idle: "
        "how often one probe batch (a zero image) tries the backend; "
        "one that succeeds makes the model ready again",
    )
    stuck_batch_timeout_s: float = Field(
        120.0,
        gt=0,
        description="/health/live answers 503 when "
        "an inference thread has been inside one batch longer "
        "than this (or has died): the orchestrator restarts a "
        "process whose backend hangs",
    )

    # -- access ---------------------------------------------------------------------------
    api_keys: ApiKeys | None = Field(
        None,
        description="bearer tokens, comma-separated (several, "
        "to rotate them): when set, every route but health, metrics "
        "and the API docs needs 'Authorization: Bearer <key>' (401 "
        "otherwise). Prefer the environment variable: a flag shows "
        "in ps. Never logged",
    )
    protect_health: bool = Field(
        False,
        description="with --api-keys, /health/* and "
        "/v2/health/* need a key too (probes then send the header)",
    )
    protect_metrics: bool = Field(
        False,
        description="with --api-keys, /metrics needs a key too "
        "(Prometheus then sends it: authorization in its scrape config)",
    )

    # -- web page ------------------------------------------------------------------------
    ui: bool = Field(
        True,
        description="serve the page at / (and its files under /ui/) that "
        "shows what the models see through the public API; --no-ui answers 404 there",
    )

    # -- process -------------------------------------------------------------------------
    workers: int = Field(
        1,
        ge=1,
        description="server processes sharing the port: one Python process "
        "cannot feed a GPU (its HTTP and decoding work holds the GIL). "
        "worker_mode frontends: N front ends (HTTP, decoding, preprocessing) "
        "feed one inference process that owns the model and the one batcher; "
        "replicas: N processes, each with its own model copy and batcher. "
        "/metrics sums every process (PROMETHEUS_MULTIPROC_DIR, default a temporary directory)",
    )
    worker_mode: Literal["frontends", "replicas"] = Field(
        "frontends",
        description="what --workers N > 1 starts (see workers); "
        "with --gpu-decode or --gpu-preprocess, replicas",
    )
    frontend_slots: int | None = Field(
        None,
        ge=1,
        description="worker_mode frontends: images each front end can have queued or running "
        "in the inference process at once, in shared memory sized for the model's input "
        "(beyond them 503); default max_queue_size",
    )
    switch_interval_ms: float | None = Field(
        None,
        gt=0,
        description="Python's GIL switch interval "
        "(default 5 ms); lower lets the inference thread "
        "win the GIL back sooner from busy threads",
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="on SIGTERM: how long queued and running requests get to finish"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    @field_validator("device")
    @classmethod
    def _normalised_device(cls, value: str) -> str:
        # Once, here: every backend gets "cpu" or "cuda:N" (torch.cuda.set_device refuses "cuda").
        from .devices import normalize_device

        return normalize_device(value)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        from .settings_rules import check_consistent

        check_consistent(self)
        return self

    @property
    def api_key_list(self) -> tuple[str, ...]:
        """The keys, an empty tuple when access is open."""
        if self.api_keys is None:
            return ()
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())

    @property
    def serves_detector(self) -> bool:
        return self.detector.lower() != "none"

    @property
    def cpu_threads(self) -> int:
        return self.threads or max(1, CPU_CORES // 2)

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1000.0

    @property
    def default_timeout_s(self) -> float:
        return self.default_timeout_ms / 1000.0

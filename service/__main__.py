"""``python -m service [--flags]``: serve DAT over HTTP with uvicorn (one process and model copy,
or ``--workers N``: N front ends feeding one inference process, or N replicas).

SIGTERM / SIGINT: readiness turns 503 and queues flush at once, uvicorn stops accepting
connections, in-flight requests get ``--shutdown-timeout-s`` to finish, then the process exits 0.
Exit status 1: the model failed to load; 2: bad settings; 3: the address cannot be bound (a
port in use: uvicorn's status for a failed start).
"""

from __future__ import annotations

import logging
import os
import sys

from pydantic import ValidationError

from .logs import configure_logging
from .server import serve
from .settings import Settings

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings(_cli_parse_args=argv)
    except ValidationError as exc:
        print(f"python -m service: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    log.info("starting", extra={"settings": settings.model_dump(mode="json")})
    log_onnxruntime()
    if settings.workers > 1:
        return serve_many(settings, argv)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # set by hand: no earlier server's files
        from .workers import metrics_directory

        metrics_directory()
    return serve(settings)


def serve_many(settings: Settings, argv: list[str]) -> int:
    """--workers N: front ends and an inference process, or replicas."""
    from .supervisor import serve_frontends
    from .workers import CannotBind, serve_workers

    try:
        if worker_mode(settings) == "frontends":
            return serve_frontends(settings, argv)
        return serve_workers(settings, argv)
    except CannotBind as exc:  # as uvicorn reports it for one process: a line, status 3
        log.error("%s", exc)
        return 3


def worker_mode(settings: Settings) -> str:
    """Front ends preprocess on their CPUs; --gpu-decode / --gpu-preprocess need the process
    that owns the GPU to decode, so with them --workers N starts replicas."""
    if settings.worker_mode == "frontends" and (settings.gpu_decode or settings.gpu_preprocess):
        log.warning("--gpu-decode / --gpu-preprocess: --workers N starts replicas (a model copy each)")
        return "replicas"
    return settings.worker_mode


def log_onnxruntime() -> None:
    """Which ONNX Runtime build this process has and what it runs on: a CUDA provider missing
    from a GPU host, or both builds installed over each other, shows at start-up."""
    from runtimes.onnxruntime import runtime_summary

    ort = runtime_summary()
    if ort is None:
        log.warning(
            "onnxruntime is not installed: the onnxruntime backend and the CPU default's "
            "export are unavailable (install the cpu or the gpu extra)"
        )
        return
    text = f"ONNX Runtime {ort['version']} providers: {', '.join(ort['providers'])}"
    if len(ort["distributions"]) > 1:
        log.warning(
            f"{text}; both onnxruntime and onnxruntime-gpu are installed and overwrite each "
            "other's files: uninstall both, then install one (the cpu or the gpu extra)",
            extra=ort,
        )
    else:
        log.info(text, extra=ort)


if __name__ == "__main__":
    sys.exit(main())

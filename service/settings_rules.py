"""The checks across settings (one field's own bounds live on the field)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings


def check_consistent(settings: Settings) -> None:
    """Raises ValueError (pydantic reports it) for settings that contradict each other."""
    if settings.max_images_per_request > settings.max_batch_size:
        raise ValueError(
            f"max_images_per_request ({settings.max_images_per_request}) must not "
            f"exceed max_batch_size ({settings.max_batch_size})"
        )
    if settings.max_images_per_request > settings.max_queue_size:
        raise ValueError(
            f"max_queue_size ({settings.max_queue_size}) must hold at least one "
            f"full request ({settings.max_images_per_request} images)"
        )
    if settings.max_reading_bytes < settings.max_body_bytes:
        raise ValueError(
            f"max_reading_bytes ({settings.max_reading_bytes}) must hold at least one "
            f"body of max_body_bytes ({settings.max_body_bytes})"
        )
    if settings.api_keys is not None and not settings.api_key_list:
        raise ValueError("api_keys is set but holds no key (unset DAT_API_KEYS to serve without keys)")
    from importlib.util import find_spec  # looked up per call: tests hide packages with it

    for setting, package in (("jpeg_decoder", "simplejpeg"), ("cpu_resize", "numba")):
        if getattr(settings, setting) == package and find_spec(package) is None:
            raise ValueError(f"{setting} {package}: the package is not installed (pip install {package})")
    if settings.backend in ("onnxruntime", "tensorrt") and settings.artifacts is None:
        raise ValueError(f"backend {settings.backend} needs --artifacts (a 'python -m export' folder)")
    slots = settings.frontend_slots
    if slots is not None and slots < settings.max_images_per_request:
        raise ValueError(
            f"frontend_slots ({slots}) must hold at least one full request "
            f"({settings.max_images_per_request} images)"
        )

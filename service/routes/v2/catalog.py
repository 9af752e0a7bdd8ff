"""The served models as the protocol names them: found by name and version, and the tensors
each takes and answers."""

from __future__ import annotations

from runtimes.manifest import INPUT_NAME

from ... import v2protocol as v2
from ...errors import NotFound, Unavailable
from ...runtime import ModelRuntime, ServiceState
from ...tasks import served
from .api import BYTES_INPUT, VERSION


def find(service: ServiceState, name: str, version: str | None) -> ModelRuntime:
    """The runtime serving the named model: 503 while the models load, 404 for another name or
    version."""
    for runtime in service.runtimes:
        meta = runtime.backend.meta
        if meta is not None and meta.name == name:
            break
    else:
        if any(runtime.backend.meta is None for runtime in service.runtimes):
            raise Unavailable(
                "the models are still loading" if service.failure is None else "the model failed to load"
            )
        served = ", ".join(repr(r.meta.name) for r in service.runtimes)
        raise NotFound(f"unknown model {name!r}; this server serves {served}")
    if version is not None and version != VERSION:
        raise NotFound(f"model {name!r} has no version {version!r}; versions: {VERSION}")
    return runtime


def input_specs(runtime: ModelRuntime) -> list[v2.TensorSpec]:
    size = runtime.meta.input_size or -1  # -1: a keep-ratio detector takes any padded size
    return [
        v2.TensorSpec(INPUT_NAME, "FP32", (-1, 3, size, size)),
        v2.TensorSpec(BYTES_INPUT, v2.BYTES, (-1,)),
    ]


def output_specs(runtime: ModelRuntime) -> list[v2.TensorSpec]:
    """The model's task's outputs, with the batch axis first."""
    return served(runtime.task).v2_outputs(runtime.meta)

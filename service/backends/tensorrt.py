"""TensorRT 10+ engines from ``python -m export``, read through its manifest.

``tensorrt`` is imported only when this backend loads, so the server (and its tests) run
where it is not installed. Buffers are CUDA tensors from PyTorch; I/O is name-based
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with the engine's first
optimization profile bounding the batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import (
    Backend,
    BackendError,
    DetectionOutput,
    ImageBatch,
    ImageOutput,
    ModelMeta,
    on_canvas,
    outputs_for,
    run_in_chunks,
)
from .manifest import check_precision, load_manifest, meta_from_manifest
from .torch import resolve_device


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


class TensorRTBackend(Backend):
    name = "tensorrt"
    takes_device_inputs = True

    def __init__(self, artifacts: str | Path, *, device: str = "auto", precision: str = "auto") -> None:
        super().__init__()
        self._precision_request = precision
        self._artifacts = Path(artifacts)
        self.device = resolve_device(device)  # "cuda:N": torch.cuda.set_device needs the index
        self._engine: Any = None
        self._context: Any = None
        self._stream: torch.cuda.Stream | None = None
        self._input = ""
        self._outputs: list[str] = []
        self._in_dtype = torch.float32
        self._out_dtypes: list[torch.dtype] = []
        self._max_batch: int | None = None
        self._static = False

    def load(self) -> ModelMeta:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError(
                "the tensorrt backend needs the 'tensorrt' package (NVIDIA's "
                "wheel index); it is not installed"
            ) from exc
        if not self.device.startswith("cuda") or not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA device")
        manifest = load_manifest(self._artifacts)
        engine_path = getattr(manifest, "engine_path", None)
        if not engine_path or not Path(engine_path).is_file():
            raise BackendError(f"{self._artifacts}: the manifest names no TensorRT engine, or it is missing")
        torch.cuda.set_device(torch.device(self.device))
        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            raise BackendError(
                f"{engine_path}: TensorRT could not deserialize the engine "
                f"(built by another TensorRT version or for another GPU?)"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input, self._outputs = manifest.input_name, list(manifest.output_names)
        if self._input not in names or not set(self._outputs) <= set(names):
            raise BackendError(
                f"{engine_path}: engine tensors {names}; the manifest names "
                f"{self._input!r} -> {self._outputs}"
            )
        self._in_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._input))
        self._out_dtypes = [_torch_dtype(trt, engine.get_tensor_dtype(o)) for o in self._outputs]
        shape = list(engine.get_tensor_shape(self._input))
        if shape[0] == -1:
            _min, _opt, max_shape = engine.get_tensor_profile_shape(self._input, 0)
            self._max_batch = int(max_shape[0])
        else:
            self._max_batch = int(shape[0])
        meta = meta_from_manifest(manifest, Path(engine_path))
        if shape[1:] != [3, meta.canvas, meta.canvas]:
            raise BackendError(
                f"{engine_path}: input shape {shape} does not match the manifest's "
                f"preprocessing (N, 3, {meta.canvas}, {meta.canvas})"
            )
        self.precision = check_precision(manifest, self._precision_request)
        self._engine, self._context = engine, engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self.device)
        self._static = shape[0] != -1
        self.meta = meta
        return meta

    def _run_chunk(self, chunk: torch.Tensor) -> list[np.ndarray]:
        x = chunk.to(self.device, self._in_dtype).contiguous()
        ctx = self._context
        if not ctx.set_input_shape(self._input, tuple(x.shape)):
            raise RuntimeError(
                f"TensorRT refused input shape {tuple(x.shape)} (outside the engine's profile)"
            )
        ctx.set_tensor_address(self._input, x.data_ptr())
        outs = []
        for name, dtype in zip(self._outputs, self._out_dtypes):
            out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = self._stream
        assert stream is not None  # made by load, before any run
        stream.wait_stream(torch.cuda.current_stream(self.device))
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return [(o.float() if o.is_floating_point() else o).cpu().numpy() for o in outs]

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        if self._context is None or self.meta is None:
            raise BackendError("run before load")
        metas = None
        if isinstance(images, list):  # keep-ratio images: onto the engine's canvas
            images, metas = on_canvas(images, self.meta)
        fixed = self._max_batch if self._static else None
        arrays = run_in_chunks(self._run_chunk, images, self._max_batch, fixed)
        return outputs_for(self.meta.task, arrays, metas)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "artifacts": str(self._artifacts), "engine_max_batch": self._max_batch}


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
    }
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise BackendError(f"unsupported TensorRT I/O type {dtype}")
    return table[dtype]

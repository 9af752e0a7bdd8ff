"""Loading and executing a TensorRT engine: the code the exporter verifies an engine with is the
code the server runs it with.

Written against the TensorRT 10/11 Python API: name-based I/O, ``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3``, and one optimization profile (index 0), whose
largest batch bounds the dynamic batch axis. Buffers are CUDA tensors from PyTorch.

``tensorrt`` is imported only when an engine is loaded, so everything else runs where it is not
installed; :func:`unavailable_reason` says in words why engines cannot run here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class EngineError(RuntimeError):
    """TensorRT is missing, or an engine cannot be built, loaded or run."""


def import_problem() -> str | None:
    """None where ``tensorrt`` imports, else why it does not (one sentence)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    except Exception as exc:  # a broken install (missing libnvinfer) raises other errors
        return f"tensorrt cannot be imported ({type(exc).__name__}: {exc})"
    return None


def unavailable_reason() -> str | None:
    """None where engines can be built and run, else why not (one sentence)."""
    problem = import_problem()
    if problem is None and not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    return problem


def tensorrt_version() -> str | None:
    try:
        import tensorrt
    except Exception:
        return None
    return str(tensorrt.__version__)


def logger():
    """TensorRT's logger at warning level (errors and warnings reach the process log)."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
    }
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise EngineError(f"unsupported TensorRT I/O type {dtype}")
    return table[dtype]


class EngineRunner:
    """One engine and its execution context on one CUDA device, called like a function:
    NCHW images (a numpy array or a tensor, on the CPU or on the device) in, the outputs named
    by ``output_names`` (in that order) out as numpy, floating outputs as float32.

    ``device`` is ``"cuda"`` (the current GPU) or ``"cuda:N"`` (made current here, before the
    engine is deserialized onto it). Executions run on the runner's own stream, after the work
    already queued on the device's current stream (which may have made the input).

    Not thread-safe: one execution context, used by one thread at a time.
    """

    def __init__(
        self,
        engine_path: str | Path,
        input_name: str,
        output_names: Sequence[str],
        device: str | torch.device = "cuda",
    ) -> None:
        problem = import_problem()
        if problem is not None:
            raise EngineError(f"TensorRT engines cannot be loaded: {problem}")
        import tensorrt as trt

        target = torch.device(device)
        if target.type != "cuda" or not torch.cuda.is_available():
            raise EngineError(f"TensorRT engines run on a CUDA device, not on {device}")
        if target.index is not None:
            torch.cuda.set_device(target)
        path = Path(engine_path)
        engine = trt.Runtime(logger()).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineError(
                f"TensorRT could not load {path.name} (could not deserialize the engine: "
                "built by another TensorRT version or for another GPU?)"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if input_name not in names or not set(output_names) <= set(names):
            raise EngineError(
                f"{path.name}: engine tensors are {names}; expected {input_name!r} -> {list(output_names)}"
            )
        self.path = path
        self.device = str(target)
        self.input_name, self.output_names = input_name, list(output_names)
        self.input_dtype = _torch_dtype(trt, engine.get_tensor_dtype(input_name))
        self.output_dtypes = [_torch_dtype(trt, engine.get_tensor_dtype(name)) for name in output_names]
        shape = [int(d) for d in engine.get_tensor_shape(input_name)]
        self.input_shape: tuple[int, ...] = tuple(shape)  # -1 marks the dynamic batch axis
        if shape[0] == -1:
            _min, _opt, largest = engine.get_tensor_profile_shape(input_name, 0)
            self.fixed_batch: int | None = None
            self.max_batch = int(largest[0])
        else:
            self.fixed_batch = self.max_batch = shape[0]
        self._engine = engine  # the context needs its engine alive
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self.device)

    def __call__(self, images: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        x = images.to(self.device, self.input_dtype).contiguous()
        context = self._context
        if not context.set_input_shape(self.input_name, tuple(x.shape)):
            raise EngineError(
                f"TensorRT refused input shape {tuple(x.shape)}: batch {x.shape[0]} is outside "
                f"the engine's profile"
            )
        context.set_tensor_address(self.input_name, x.data_ptr())
        outputs = []
        for name, dtype in zip(self.output_names, self.output_dtypes):
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        if not context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return [(o.float() if o.is_floating_point() else o).cpu().numpy() for o in outputs]

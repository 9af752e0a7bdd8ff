"""The run side of the fake ``tensorrt`` module (:mod:`tests.helpers.fake_tensorrt`):
``Runtime``, the engine and its execution context. Executing reads the inputs from the
addresses given, runs the plan's ONNX graph with ONNX Runtime on the CPU and writes the
outputs to their addresses, after the checks TensorRT makes (shapes inside the profile, every
address set)."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from .fake_tensorrt_types import NUMPY_TYPES, DataType, Dims, TensorIOMode, deserialize_plan

if TYPE_CHECKING:
    from .fake_tensorrt import FakeTensorRT


def runtime_api(fake: FakeTensorRT, Logger: type) -> dict[str, type]:
    """The module's run classes, recording into ``fake`` and taking its ``Logger``."""

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            fake.record("Runtime", logger)
            assert isinstance(logger, Logger)

        def deserialize_cuda_engine(self, serialized_engine: bytes):
            fake.record("Runtime.deserialize_cuda_engine", len(serialized_engine))
            plan = deserialize_plan(bytes(serialized_engine))
            if plan is None:
                return None  # TensorRT logs an error and returns None
            header, graph = plan
            if header["version"] != fake.version:
                return None  # plans are tied to the TensorRT version that built them
            if fake.edit_engine is not None:
                fake.edit_engine(header)
            return ICudaEngine(header, graph)

    class ICudaEngine:
        def __init__(self, header: dict, graph: bytes) -> None:
            self.header = header
            self.graph = graph
            self.tensors = {t["name"]: (TensorIOMode.INPUT, t) for t in header["inputs"]}
            self.tensors.update({t["name"]: (TensorIOMode.OUTPUT, t) for t in header["outputs"]})
            self.names = list(self.tensors)

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        @property
        def num_optimization_profiles(self) -> int:
            return 1

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self.tensors[name][0] if name in self.tensors else TensorIOMode.NONE

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType[self.tensors[name][1]["dtype"]]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self.tensors[name][1]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            mode, tensor = self.tensors[name]
            if mode is not TensorIOMode.INPUT or profile_index != 0 or "profile" not in tensor:
                raise RuntimeError(f"no profile shape for {name!r} in profile {profile_index}")
            return [Dims(d) for d in tensor["profile"]]

        def create_execution_context(self) -> IExecutionContext:
            fake.record("ICudaEngine.create_execution_context")
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shapes: dict[str, list[int]] = {}
            self.addresses: dict[str, int] = {}
            self._session: onnxruntime.InferenceSession | None = None

        def set_input_shape(self, name: str, shape) -> bool:
            shape = [int(s) for s in shape]
            fake.record("IExecutionContext.set_input_shape", name, tuple(shape))
            mode, tensor = self.engine.tensors.get(name, (TensorIOMode.NONE, None))
            if mode is not TensorIOMode.INPUT or len(shape) != len(tensor["shape"]):
                return False
            if any(s != -1 and s != v for s, v in zip(tensor["shape"], shape)):
                return False
            if "profile" in tensor:
                lo, _, hi = tensor["profile"]
                if not all(a <= v <= b for a, v, b in zip(lo, shape, hi)):
                    return False
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            fake.record("IExecutionContext.set_tensor_address", name)
            if name not in self.engine.tensors or not isinstance(memory, int) or memory == 0:
                return False
            self.addresses[name] = memory
            return True

        def get_tensor_shape(self, name: str) -> Dims:
            mode, tensor = self.engine.tensors[name]
            if mode is TensorIOMode.INPUT:
                return Dims(self.shapes.get(name, tensor["shape"]))
            batch = next(iter(self.shapes.values()), [-1])[0]
            return Dims(batch if d == -1 else d for d in tensor["shape"])

        def execute_async_v3(self, stream_handle: int) -> bool:
            fake.record("IExecutionContext.execute_async_v3", stream_handle)
            if not isinstance(stream_handle, int):
                raise TypeError("execute_async_v3 takes the stream's handle, an int")
            if fake.execute_fails:
                return False
            inputs = [n for n, (mode, _) in self.engine.tensors.items() if mode is TensorIOMode.INPUT]
            if set(self.shapes) != set(inputs) or set(self.addresses) != set(self.engine.tensors):
                return False  # TensorRT: every input shape and every address must be set
            if self._session is None:
                self._session = onnxruntime.InferenceSession(
                    self.engine.graph, providers=["CPUExecutionProvider"]
                )
            feeds = {}
            for name in inputs:
                dtype = NUMPY_TYPES[self.engine.tensors[name][1]["dtype"]]
                feeds[name] = _view(self.addresses[name], self.shapes[name], dtype).copy()
            outputs = self._session.run(None, feeds)
            output_tensors = [(n, t) for n, (m, t) in self.engine.tensors.items() if m is TensorIOMode.OUTPUT]
            for (name, tensor), value in zip(output_tensors, outputs):
                shape = list(self.get_tensor_shape(name))
                if list(value.shape) != shape:
                    return False
                _view(self.addresses[name], shape, NUMPY_TYPES[tensor["dtype"]])[...] = value
            fake.executed.append({name: list(shape) for name, shape in self.shapes.items()})
            return True

    return {"Runtime": Runtime}


def _view(address: int, shape, dtype) -> np.ndarray:
    """The memory at ``address`` (a device pointer: here CPU memory) as a numpy array."""
    count = int(np.prod(shape)) if len(shape) else 1
    buffer = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)

"""TensorRT 10 on a CPU machine (with a fake GPU: :mod:`tests.helpers.fake_cuda`), so that the
engine code paths (export -> engine -> load -> shapes -> execute) run in CI exactly as written.

:class:`FakeTensorRT` is an importable ``tensorrt`` module implementing the documented TensorRT
10 Python API that ``export/tensorrt.py`` (builds) and ``runtimes/tensorrt.py`` (runs) use:
Logger, Builder, OnnxParser, the builder config, optimization profiles,
``Runtime.deserialize_cuda_engine``, the engine's name-based I/O and the execution context's
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``. Its "plan" holds the ONNX
graph; executing reads the input from the address it was given, runs the graph with ONNX Runtime
on the CPU and writes the outputs to their addresses. It checks what TensorRT checks (profiles
cover the dynamic input, shapes inside the profile, every address set) and answers as TensorRT
does (False, or None for a plan it cannot read). Every call is recorded in ``calls``.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

_ONNX_TYPES = {
    onnx.TensorProto.FLOAT: "FLOAT",
    onnx.TensorProto.FLOAT16: "HALF",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT8: "INT8",
}
_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}
_MAGIC = b"FAKE-TRT-PLAN\n"


class Dims:
    """trt.Dims: a sequence of ints, -1 for a dynamic axis (not a list or tuple itself)."""

    def __init__(self, values) -> None:
        self._values = tuple(int(v) for v in values)

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index):
        return self._values[index]

    def __repr__(self) -> str:
        return f"Dims{self._values}"


def _tensors(values) -> list[dict]:
    out = []
    for value in values:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        out.append(
            {"name": value.name, "dtype": _ONNX_TYPES[value.type.tensor_type.elem_type], "shape": dims}
        )
    return out


class FakeTensorRT:
    """Builds the ``tensorrt`` module; ``install(monkeypatch)`` puts it in ``sys.modules``.

    Knobs, each making one documented behaviour happen: ``parse_errors`` (the parser refuses
    the graph), ``build_fails`` (build_serialized_network returns None), ``execute_fails``
    (execute_async_v3 returns False), ``edit_engine`` (called with a deserialized engine's
    description, ``{"inputs": [...], "outputs": [...]}`` of ``{"name", "dtype", "shape",
    "profile"}``, to give it other names, shapes, a fixed batch or types), ``version`` (a plan
    built under another version is not deserialized).
    """

    def __init__(self, version: str = "10.13.0.fake") -> None:
        self.version = version
        self.calls: list[tuple] = []
        self.parse_errors: list[str] = []
        self.build_fails = False
        self.execute_fails = False
        self.edit_engine: Callable[[dict], None] | None = None
        self.executed: list[dict] = []
        self.module = self._module()

    def install(self, monkeypatch) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "tensorrt", self.module)
        return self.module

    def record(self, *call) -> None:
        self.calls.append(call)

    def called(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]

    # -- the module --------------------------------------------------------------------
    def _module(self) -> types.ModuleType:  # noqa: C901 - one API surface, kept together
        fake = self
        trt = types.ModuleType("tensorrt")
        trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # importlib.util.find_spec reads it
        trt.__version__ = self.version

        class DataType(enum.Enum):
            FLOAT = 0
            HALF = 1
            INT8 = 2
            INT32 = 3
            BOOL = 4
            INT64 = 8
            BF16 = 7

        class LoggerSeverity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        class Logger:
            Severity = LoggerSeverity
            INTERNAL_ERROR, ERROR = LoggerSeverity.INTERNAL_ERROR, LoggerSeverity.ERROR
            WARNING, INFO, VERBOSE = LoggerSeverity.WARNING, LoggerSeverity.INFO, LoggerSeverity.VERBOSE

            def __init__(self, min_severity: LoggerSeverity = LoggerSeverity.WARNING) -> None:
                fake.record("Logger", LoggerSeverity(min_severity))
                self.min_severity = min_severity

        class NetworkDefinitionCreationFlag(enum.IntEnum):
            EXPLICIT_BATCH = 0
            STRONGLY_TYPED = 1

        class MemoryPoolType(enum.Enum):
            WORKSPACE = 0

        class BuilderFlag(enum.Enum):
            FP16 = 0
            TF32 = 7

        class TensorIOMode(enum.Enum):
            NONE = 0
            INPUT = 1
            OUTPUT = 2

        class INetworkDefinition:
            def __init__(self, flags: int) -> None:
                self.flags = flags
                self.graph: bytes | None = None
                self.inputs: list[dict] = []
                self.outputs: list[dict] = []

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            @property
            def num_outputs(self) -> int:
                return len(self.outputs)

        class IParserError:
            def __init__(self, text: str) -> None:
                self.text = text

            def desc(self) -> str:
                return self.text

            def __str__(self) -> str:
                return f"In node -1: {self.text}"

        class OnnxParser:
            def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
                assert isinstance(network, INetworkDefinition) and isinstance(logger, Logger)
                self.network = network
                self._errors: list[IParserError] = []

            def parse_from_file(self, path: str) -> bool:
                fake.record("OnnxParser.parse_from_file", path)
                if not isinstance(path, str):
                    raise TypeError("parse_from_file takes a str path")
                self._errors = [IParserError(e) for e in fake.parse_errors]
                if self._errors:
                    return False
                data = Path(path).read_bytes()
                graph = onnx.load_from_string(data).graph
                initializers = {i.name for i in graph.initializer}
                self.network.graph = data
                self.network.inputs = _tensors(i for i in graph.input if i.name not in initializers)
                self.network.outputs = _tensors(graph.output)
                return True

            @property
            def num_errors(self) -> int:
                return len(self._errors)

            def get_error(self, index: int) -> IParserError:
                return self._errors[index]

        class IOptimizationProfile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

            def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - TensorRT's names
                fake.record("IOptimizationProfile.set_shape", input, tuple(min), tuple(opt), tuple(max))
                self.shapes[input] = (Dims(min), Dims(opt), Dims(max))

        class IBuilderConfig:
            def __init__(self) -> None:
                self.pools: dict[Any, int] = {}
                self.flags = {BuilderFlag.TF32}  # TensorRT's default
                self.profiles: list[IOptimizationProfile] = []

            def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
                fake.record("IBuilderConfig.set_memory_pool_limit", pool, size)
                if not isinstance(pool, MemoryPoolType) or not isinstance(size, int):
                    raise TypeError("set_memory_pool_limit(MemoryPoolType, int)")
                self.pools[pool] = size

            def clear_flag(self, flag: BuilderFlag) -> None:
                fake.record("IBuilderConfig.clear_flag", flag)
                self.flags.discard(flag)

            def set_flag(self, flag: BuilderFlag) -> None:
                fake.record("IBuilderConfig.set_flag", flag)
                self.flags.add(flag)

            def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
                fake.record("IBuilderConfig.add_optimization_profile")
                self.profiles.append(profile)
                return len(self.profiles) - 1

        class Builder:
            def __init__(self, logger: Logger) -> None:
                fake.record("Builder", logger)
                assert isinstance(logger, Logger)

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                fake.record("Builder.create_network", flags)
                return INetworkDefinition(flags)

            def create_builder_config(self) -> IBuilderConfig:
                return IBuilderConfig()

            def create_optimization_profile(self) -> IOptimizationProfile:
                return IOptimizationProfile()

            def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
                fake.record(
                    "Builder.build_serialized_network", network.flags, sorted(f.name for f in config.flags)
                )
                if fake.build_fails or network.graph is None:
                    return None
                inputs = []
                for tensor in network.inputs:
                    shape = list(tensor["shape"])
                    if -1 in shape:  # TensorRT: a dynamic input needs a profile, within bounds
                        found = [
                            p.shapes[tensor["name"]] for p in config.profiles if tensor["name"] in p.shapes
                        ]
                        if not found:
                            return None
                        lo, opt, hi = (list(d) for d in found[0])
                        fixed_ok = all(
                            s in (-1, a) and a == b == c for s, a, b, c in zip(shape, lo, opt, hi) if s != -1
                        )
                        if (
                            len(lo) != len(shape)
                            or not fixed_ok
                            or not all(a <= b <= c for a, b, c in zip(lo, opt, hi))
                        ):
                            return None
                        tensor = {**tensor, "profile": [lo, opt, hi]}
                    inputs.append(tensor)
                header = {
                    "version": fake.version,
                    "inputs": inputs,
                    "outputs": network.outputs,
                    "strongly_typed": bool(
                        network.flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)
                    ),
                    "tf32": BuilderFlag.TF32 in config.flags,
                    "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
                }
                blob = json.dumps(header).encode()
                return _MAGIC + len(blob).to_bytes(8, "little") + blob + network.graph

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                fake.record("Runtime", logger)
                assert isinstance(logger, Logger)

            def deserialize_cuda_engine(self, serialized_engine: bytes):
                fake.record("Runtime.deserialize_cuda_engine", len(serialized_engine))
                data = bytes(serialized_engine)
                if not data.startswith(_MAGIC):
                    return None  # TensorRT logs an error and returns None
                size = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 8], "little")
                start = len(_MAGIC) + 8
                header = json.loads(data[start : start + size])
                if header["version"] != fake.version:
                    return None  # plans are tied to the TensorRT version that built them
                if fake.edit_engine is not None:
                    fake.edit_engine(header)
                return ICudaEngine(header, data[start + size :])

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
                    dtype = _NUMPY[self.engine.tensors[name][1]["dtype"]]
                    feeds[name] = _view(self.addresses[name], self.shapes[name], dtype).copy()
                outputs = self._session.run(None, feeds)
                output_tensors = [
                    (n, t) for n, (m, t) in self.engine.tensors.items() if m is TensorIOMode.OUTPUT
                ]
                for (name, tensor), value in zip(output_tensors, outputs):
                    shape = list(self.get_tensor_shape(name))
                    if list(value.shape) != shape:
                        return False
                    _view(self.addresses[name], shape, _NUMPY[tensor["dtype"]])[...] = value
                fake.executed.append({name: list(shape) for name, shape in self.shapes.items()})
                return True

        for name, value in {
            "DataType": DataType,
            "Logger": Logger,
            "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
            "MemoryPoolType": MemoryPoolType,
            "BuilderFlag": BuilderFlag,
            "TensorIOMode": TensorIOMode,
            "Builder": Builder,
            "OnnxParser": OnnxParser,
            "Runtime": Runtime,
            "Dims": Dims,
            "float32": DataType.FLOAT,
            "float16": DataType.HALF,
            "int8": DataType.INT8,
            "int32": DataType.INT32,
            "int64": DataType.INT64,
            "bfloat16": DataType.BF16,
            "bool": DataType.BOOL,
        }.items():
            setattr(trt, name, value)
        return trt


def _view(address: int, shape, dtype) -> np.ndarray:
    """The memory at ``address`` (a device pointer: here CPU memory) as a numpy array."""
    count = int(np.prod(shape)) if len(shape) else 1
    buffer = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)

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

The module is put together here (:class:`FakeTensorRT`); its build side is
:mod:`tests.helpers.fake_tensorrt_builder`, its run side :mod:`tests.helpers.fake_tensorrt_runtime`,
its enums, ``Dims`` and plan format :mod:`tests.helpers.fake_tensorrt_types`.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Callable

from .fake_tensorrt_builder import builder_api
from .fake_tensorrt_runtime import runtime_api
from .fake_tensorrt_types import (
    BuilderFlag,
    DataType,
    Dims,
    LoggerSeverity,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    TensorIOMode,
)


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
    def _module(self) -> types.ModuleType:
        fake = self
        trt = types.ModuleType("tensorrt")
        trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # importlib.util.find_spec reads it
        trt.__version__ = self.version

        class Logger:
            Severity = LoggerSeverity
            INTERNAL_ERROR, ERROR = LoggerSeverity.INTERNAL_ERROR, LoggerSeverity.ERROR
            WARNING, INFO, VERBOSE = LoggerSeverity.WARNING, LoggerSeverity.INFO, LoggerSeverity.VERBOSE

            def __init__(self, min_severity: LoggerSeverity = LoggerSeverity.WARNING) -> None:
                fake.record("Logger", LoggerSeverity(min_severity))
                self.min_severity = min_severity

        for name, value in {
            "DataType": DataType,
            "Logger": Logger,
            "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
            "MemoryPoolType": MemoryPoolType,
            "BuilderFlag": BuilderFlag,
            "TensorIOMode": TensorIOMode,
            **builder_api(fake, Logger),
            **runtime_api(fake, Logger),
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

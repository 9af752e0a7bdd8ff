"""The values the fake ``tensorrt`` module (:mod:`tests.helpers.fake_tensorrt`) hands out and
keeps: TensorRT 10's enums and ``Dims``, the types of an engine's tensors, and the fake's plan
format (``MAGIC``, the header's length, a JSON header describing the engine, the ONNX graph)."""

from __future__ import annotations

import enum
import json

import numpy as np
import onnx

ONNX_TYPES = {
    onnx.TensorProto.FLOAT: "FLOAT",
    onnx.TensorProto.FLOAT16: "HALF",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT8: "INT8",
}
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}
MAGIC = b"FAKE-TRT-PLAN\n"


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


def serialize_plan(header: dict, graph: bytes) -> bytes:
    """A plan: the header (the engine's tensors and build settings) and the ONNX graph it runs."""
    blob = json.dumps(header).encode()
    return MAGIC + len(blob).to_bytes(8, "little") + blob + graph


def deserialize_plan(data: bytes) -> tuple[dict, bytes] | None:
    """(header, ONNX graph) of a plan; None for bytes that are not one of the fake's plans."""
    if not data.startswith(MAGIC):
        return None
    size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    return json.loads(data[start : start + size]), data[start + size :]

"""The Open Inference Protocol (v2, as Triton and KServe speak it) on the wire.

Bytes in, checked tensors out, and back: no HTTP and no model here, so the route stays thin.
Everything a client can get wrong raises :class:`BadRequest` (400) with a message that names
the tensor; nothing is ever allocated from a declared shape.

Binary tensor extension: with an ``Inference-Header-Content-Length`` header the body is that
many bytes of JSON, then the raw tensors, one after the other in the order of the inputs that
declare ``binary_data_size`` (which must add up to the rest of the body exactly). Raw tensors
are little-endian and row-major; a BYTES element is a 4-byte little-endian length, then the
bytes. Responses use the same layout for outputs asked for in binary.

Classification extension: an output requested with ``"classification": k`` comes back as BYTES
of shape [N, min(k, classes)], each element ``"<value>:<index>:<label>"`` for the k highest
values of that image (the raw output value, printed as C's ``%f``, as Triton does).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
# Fixed-size datatypes we read: the model takes float32, FP16 is widened on arrival.
NUMERIC: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "FP16": np.dtype("<f2")}  # accepted as inputs
OUTPUT_TYPES: dict[str, np.dtype] = {**NUMERIC, "INT64": np.dtype("<i8")}  # a detector's labels are INT64
BYTES = "BYTES"
KNOWN_DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    BYTES,
)
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_LENGTH = struct.Struct("<I")
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as model metadata lists it (-1: the batch axis)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class RequestInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None  # the JSON "data" field, or None
    raw: bytes | None = None  # its slice of the binary section, or None

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0  # 0: the tensor itself


@dataclass
class InferRequest:
    id: str | None
    inputs: list[RequestInput]
    outputs: list[RequestedOutput] | None  # None: every output, in binary if binary_output
    binary_output: bool
    timeout_us: int | None  # Triton's "timeout" parameter (microseconds)


@dataclass
class ResponseOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]  # a list for BYTES, an array of OUTPUT_TYPES otherwise
    binary: bool


# -- requests ------------------------------------------------------------------------------


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON part's size from the header (None: the whole body is JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise BadRequest(f"{HEADER_LENGTH} must be a non-negative whole number, got {value!r}")
    length = int(text)
    if length > body_size:
        raise BadRequest(f"{HEADER_LENGTH} is {length} but the body has only {body_size} bytes")
    return length


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _load_json(text: bytes, whole_body: bool) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("the JSON request is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN / Infinity
        hint = f" (binary tensors need the {HEADER_LENGTH} header)" if whole_body else ""
        raise BadRequest(f"the request is not valid JSON: {exc}{hint}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parameters(holder: dict, where: str) -> dict:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    for key in _UNSUPPORTED_PARAMETERS:
        if key in parameters:
            raise BadRequest(f"{where}: shared memory is not supported by this server")
    return parameters


def _bool(parameters: dict, key: str, where: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameter {key!r} must be true or false")
    return value


def _input(item: Any, index: int) -> tuple[RequestInput, int | None]:
    if not isinstance(item, dict):
        raise BadRequest(f"inputs[{index}] must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}] needs a 'name' string")
    where = f"input {name!r}"
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise BadRequest(f"{where} needs a 'datatype' string")
    if datatype not in KNOWN_DATATYPES:
        raise BadRequest(f"{where}: unknown datatype {datatype!r}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers")
    parameters = _parameters(item, where)
    size = parameters.get(BINARY_DATA_SIZE)
    has_data = "data" in item
    if size is not None:
        if not _is_int(size) or size < 0:
            raise BadRequest(f"{where}: {BINARY_DATA_SIZE} must be a non-negative integer")
        if has_data:
            raise BadRequest(f"{where} has both JSON 'data' and {BINARY_DATA_SIZE}")
    elif not has_data:
        raise BadRequest(f"{where} has neither 'data' nor {BINARY_DATA_SIZE}")
    return RequestInput(name, datatype, tuple(shape), item.get("data")), size


def _output(item: Any, index: int, binary_default: bool) -> RequestedOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise BadRequest(f"outputs[{index}] must be an object with a 'name' string")
    name = item["name"]
    where = f"output {name!r}"
    parameters = _parameters(item, where)
    classification = parameters.get("classification", 0)
    if not _is_int(classification) or classification < 0:
        raise BadRequest(f"{where}: 'classification' must be a non-negative integer")
    return RequestedOutput(name, _bool(parameters, "binary_data", where, binary_default), classification)


def parse_request(body: bytes, json_size: int | None) -> InferRequest:
    """Splits and checks an inference request; binary slices are assigned to their inputs."""
    header = body if json_size is None else body[:json_size]
    binary = b"" if json_size is None else body[json_size:]
    if not header.strip():
        raise BadRequest("empty inference request: expected a JSON object with 'inputs'")
    request = _load_json(header, json_size is None)
    if not isinstance(request, dict):
        raise BadRequest("the inference request must be a JSON object")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    parameters = _parameters(request, "request")
    binary_output = _bool(parameters, "binary_data_output", "request")
    timeout = parameters.get("timeout")
    if timeout is not None and (not _is_int(timeout) or timeout < 0):
        raise BadRequest("request: parameter 'timeout' must be a non-negative integer (microseconds)")

    items = request.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest("'inputs' must be a non-empty list")
    inputs: list[RequestInput] = []
    offset = 0
    for index, item in enumerate(items):
        tensor, size = _input(item, index)
        if any(t.name == tensor.name for t in inputs):
            raise BadRequest(f"input {tensor.name!r} appears twice")
        if size is not None:
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {tensor.name!r} declares {size} bytes of binary data but only "
                    f"{len(binary) - offset} remain after the JSON header"
                    + ("" if json_size is not None else f" (no {HEADER_LENGTH} header)")
                )
            tensor.raw = binary[offset : offset + size]
            offset += size
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes after the JSON header belong to no input "
            f"(the inputs' {BINARY_DATA_SIZE} add up to {offset})"
        )

    outputs = None
    if "outputs" in request:
        items = request["outputs"]
        if not isinstance(items, list):
            raise BadRequest("'outputs' must be a list")
        outputs = [_output(item, i, binary_output) for i, item in enumerate(items)]
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise BadRequest("an output is requested twice")
    return InferRequest(request_id, inputs, outputs, binary_output, timeout)


def numeric_tensor(tensor: RequestInput) -> np.ndarray:
    """An FP32 / FP16 input as float32 of its declared shape (a writable copy)."""
    dtype = NUMERIC[tensor.datatype]
    where = f"input {tensor.name!r}"
    if tensor.raw is not None:
        expected = tensor.elements * dtype.itemsize
        if len(tensor.raw) != expected:
            raise BadRequest(
                f"{where}: shape {list(tensor.shape)} of {tensor.datatype} needs "
                f"{expected} bytes, got {len(tensor.raw)}"
            )
        array = np.frombuffer(tensor.raw, dtype=dtype).reshape(tensor.shape)
    else:
        try:
            values = np.array(tensor.data)
        except ValueError:  # ragged nesting
            raise BadRequest(f"{where}: 'data' is not a regular array") from None
        if values.dtype.kind not in "iuf" or values.ndim == 0:
            raise BadRequest(f"{where}: 'data' must be an array of numbers")
        if values.size != tensor.elements or (values.ndim > 1 and values.shape != tensor.shape):
            raise BadRequest(
                f"{where}: 'data' holds {values.size} values in shape "
                f"{list(values.shape)}; shape {list(tensor.shape)} needs "
                f"{tensor.elements}"
            )
        array = values.reshape(tensor.shape).astype(dtype)  # FP16 data rounds as FP16 would
    if not np.isfinite(array).all():
        raise BadRequest(f"{where} holds NaN or infinite values")
    return array.astype(np.float32)


def bytes_elements(tensor: RequestInput) -> list[bytes]:
    """A BYTES input's elements, row-major."""
    where = f"input {tensor.name!r}"
    if tensor.raw is None:
        flat = _flatten(tensor.data)
        if flat is None or not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"{where}: BYTES 'data' must be an array of strings")
        elements = [v.encode("utf-8") for v in flat]
    else:
        elements, raw, offset = [], tensor.raw, 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise BadRequest(f"{where}: binary BYTES data ends inside an element's length")
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise BadRequest(
                    f"{where}: element {len(elements)} declares {length} bytes but "
                    f"only {len(raw) - offset} remain"
                )
            elements.append(raw[offset : offset + length])
            offset += length
    if len(elements) != tensor.elements:
        raise BadRequest(
            f"{where}: shape {list(tensor.shape)} needs {tensor.elements} elements, got {len(elements)}"
        )
    return elements


def _flatten(data: Any) -> list | None:
    if not isinstance(data, list):
        return None
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


# -- responses -----------------------------------------------------------------------------


def classification(values: np.ndarray, k: int, labels: Sequence[str]) -> list[bytes]:
    """Triton's classification strings for (N, C) outputs: the top min(k, C) per row, highest
    value first (ties: lower index first), as ``value:index:label``, row-major."""
    k = min(k, values.shape[1])
    elements = []
    for row in values:
        for i in np.argsort(-row, kind="stable")[:k]:
            label = f":{labels[i]}" if i < len(labels) else ""
            elements.append(f"{float(row[i]):f}:{int(i)}{label}".encode())
    return elements


def _serialise_bytes(elements: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[ResponseOutput]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary."""
    entries, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.binary:
            blob = (
                _serialise_bytes(out.data)
                if isinstance(out.data, list)
                else np.ascontiguousarray(out.data, OUTPUT_TYPES[out.datatype]).tobytes()
            )
            entry["parameters"] = {BINARY_DATA_SIZE: len(blob)}
            blobs.append(blob)
        elif isinstance(out.data, list):
            entry["data"] = [e.decode("utf-8", "replace") for e in out.data]
        else:
            entry["data"] = np.asarray(out.data, OUTPUT_TYPES[out.datatype]).ravel().tolist()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = entries
    try:
        header = json.dumps(response, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise ValueError(
            "the model produced NaN or infinite values, which JSON cannot carry; ask for the output in binary"
        ) from None
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def error_body(message: str) -> dict[str, str]:
    """The protocol's error shape, which tritonclient reads."""
    return {"error": message}

"""Open Inference Protocol v2 requests as tritonclient.http encodes them, raw ones, and what a
tiny model should answer."""

from __future__ import annotations

import json
import struct

import numpy as np
import torch
import tritonclient.http as triton

INFER = "/v2/models/dat/infer"
LENGTH = "Inference-Header-Content-Length"


def images(n: int, seed: int = 0) -> np.ndarray:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()


def expected_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def triton_request(inputs, outputs=None, **kwargs) -> tuple[bytes, dict[str, str]]:
    """A request body exactly as tritonclient.http encodes it."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs, **kwargs)
    return body, ({LENGTH: str(json_size)} if json_size is not None else {})


def post(client, inputs, outputs=None, path: str = INFER, **kwargs):
    """POSTs what tritonclient.http would send for ``client.infer(inputs, outputs, ...)``."""
    body, headers = triton_request(inputs, outputs, **kwargs)
    return client.post(path, content=body, headers=headers)


def triton_result(response) -> triton.InferResult:
    length = response.headers.get(LENGTH)
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length is not None else None
    )


def tensor_input(x: np.ndarray, binary: bool, name: str = "images") -> triton.InferInput:
    datatype = {np.float32: "FP32", np.float16: "FP16"}[x.dtype.type]
    tensor = triton.InferInput(name, list(x.shape), datatype)
    return tensor.set_data_from_numpy(x, binary_data=binary)


def raw_request(header: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), ({LENGTH: str(len(text))} if blobs else {})


def images_header(n: int = 1, size: int | None = None, datatype: str = "FP32", **extra) -> dict:
    nbytes = n * 3 * 32 * 32 * (4 if datatype == "FP32" else 2)
    tensor = {
        "name": "images",
        "datatype": datatype,
        "shape": [n, 3, 32, 32],
        "parameters": {"binary_data_size": nbytes if size is None else size},
        **extra,
    }
    return {"inputs": [tensor]}


def encoded(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)

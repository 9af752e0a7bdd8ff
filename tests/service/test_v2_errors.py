"""The Open Inference Protocol v2 in process: every malformed request gets a clear error in the
protocol's shape; body limits; our own routes keep theirs."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tests.helpers.app import served
from tests.helpers.v2 import (
    INFER,
    LENGTH,
    encoded,
    images,
    images_header,
    raw_request,
)

pytestmark = pytest.mark.anyio


# -- malformed requests --------------------------------------------------------------------


def _bad_requests() -> dict[str, tuple[bytes, dict, int, str]]:
    one = images(1).tobytes()
    cases: dict[str, tuple[bytes, dict[str, str], int, str]] = {
        "not json": (b"{nope", {}, 400, "not valid JSON"),
        "empty body": (b"", {}, 400, "empty inference request"),
        "not an object": (b"[1, 2]", {}, 400, "must be a JSON object"),
        "no inputs": (b'{"inputs": []}', {}, 400, "'inputs' must be a non-empty list"),
        "NaN in JSON": (
            b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [NaN]}]}',
            {},
            400,
            "not valid JSON",
        ),
    }
    cases["wrong datatype"] = (
        *raw_request(images_header(datatype="INT32", size=len(one)), one),
        400,
        "must be FP32 or FP16",
    )
    cases["unknown datatype"] = (
        *raw_request(images_header(datatype="FP8", size=len(one)), one),
        400,
        "unknown datatype",
    )
    wrong_shape = images_header()
    wrong_shape["inputs"][0]["shape"] = [1, 3, 16, 64]
    cases["wrong shape"] = (*raw_request(wrong_shape, one), 400, "must have shape [N, 3, 32, 32]")
    zero = images_header(size=0)
    zero["inputs"][0]["shape"] = [0, 3, 32, 32]
    cases["no images"] = (*raw_request(zero), 400, "N >= 1")
    cases["byte count short"] = (
        *raw_request(images_header(size=len(one) - 4), one[:-4]),
        400,
        "needs 12288 bytes, got 12284",
    )
    cases["bytes left over"] = (
        *raw_request(images_header(size=len(one)), one, b"xx"),
        400,
        "2 bytes after the JSON header belong to no input",
    )
    cases["declared more than sent"] = (
        *raw_request(images_header(size=len(one) + 8), one),
        400,
        "declares 12296 bytes of binary data but only 12288 remain",
    )
    body, headers = raw_request(images_header(size=len(one)), one)
    cases["binary without the header"] = (body, {}, 400, f"binary tensors need the {LENGTH} header")
    nan = np.full((1, 3, 32, 32), np.nan, np.float32).tobytes()
    cases["NaN in binary"] = (
        *raw_request(images_header(size=len(nan)), nan),
        400,
        "holds NaN or infinite values",
    )
    cases["header length not a number"] = (body, {LENGTH: "12x"}, 400, "non-negative whole number")
    cases["negative header length"] = (body, {LENGTH: "-5"}, 400, "non-negative whole number")
    cases["header length past the body"] = (
        body,
        {LENGTH: str(len(body) + 1)},
        400,
        f"the body has only {len(body)} bytes",
    )
    both = images_header(size=len(one), data=[0.0])
    cases["data and binary"] = (*raw_request(both, one), 400, "both JSON 'data' and binary_data_size")
    cases["neither data nor binary"] = (
        json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32]}]}).encode(),
        {},
        400,
        "neither 'data' nor binary_data_size",
    )
    short_json = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.5] * 10}]
    }
    cases["too few JSON values"] = (json.dumps(short_json).encode(), {}, 400, "needs 3072")
    strings = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": ["a"] * 3072}]
    }
    cases["strings for FP32"] = (json.dumps(strings).encode(), {}, 400, "must be an array of numbers")
    unknown = images_header(size=len(one))
    unknown["inputs"][0]["name"] = "pixels"
    cases["unknown input"] = (*raw_request(unknown, one), 400, "unknown input 'pixels'")
    two = images_header(size=len(one))
    two["inputs"].append({**two["inputs"][0], "name": "image_bytes"})
    cases["two inputs"] = (*raw_request(two, one, one), 400, "send exactly one input")
    cases["duplicate input"] = (
        *raw_request({"inputs": [images_header(size=len(one))["inputs"][0]] * 2}, one, one),
        400,
        "appears twice",
    )
    outputs = {**images_header(size=len(one)), "outputs": [{"name": "probs"}]}
    cases["unknown output"] = (*raw_request(outputs, one), 400, "unknown output 'probs'")
    shm = {
        **images_header(size=len(one)),
        "outputs": [{"name": "logits", "parameters": {"shared_memory_region": "r"}}],
    }
    cases["shared memory"] = (*raw_request(shm, one), 400, "shared memory is not supported")
    cases["classification not a count"] = (
        *raw_request(
            {
                **images_header(size=len(one)),
                "outputs": [{"name": "logits", "parameters": {"classification": "3"}}],
            },
            one,
        ),
        400,
        "'classification' must be a non-negative integer",
    )
    nine = np.zeros((9, 3, 32, 32), np.float32).tobytes()
    cases["too many images"] = (*raw_request(images_header(9), nine), 413, "9 images in one request")
    blob = encoded(b"not an image")
    cases["undecodable image"] = (
        *raw_request(
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ]
            },
            blob,
        ),
        400,
        "input 'image_bytes': cannot identify the image",
    )
    truncated = struct.pack("<I", 100) + b"abc"
    cases["BYTES element cut short"] = (
        *raw_request(
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(truncated)},
                    }
                ]
            },
            truncated,
        ),
        400,
        "declares 100 bytes but only 3 remain",
    )
    cases["BYTES as FP32"] = (
        *raw_request({"inputs": [{"name": "image_bytes", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
        400,
        "must be BYTES",
    )
    cases["bad request id"] = (
        *raw_request({"id": 5, **images_header(size=len(one))}, one),
        400,
        "'id' must be a string",
    )
    return cases


BAD = _bad_requests()


@pytest.mark.parametrize("case", list(BAD))
async def test_malformed_requests_get_a_clear_error(backend, case):
    body, headers, status, message = BAD[case]
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error"} and isinstance(error["error"], str)
    assert message in error["error"], error["error"]
    assert backend.batches == []  # nothing reached the model


async def test_body_over_the_limit_and_compressed_bodies_are_refused(backend):
    x = np.zeros((8, 3, 32, 32), np.float32).tobytes()  # 98 KB
    body, headers = raw_request(images_header(8), x)
    async with served(backend, max_body_bytes=64 * 1024) as client:
        large = await client.post(INFER, content=body, headers=headers)
        gzipped = await client.post(INFER, content=body, headers={**headers, "Content-Encoding": "gzip"})
        bad_header = await client.post(INFER, content=body, headers={**headers, "X-Timeout-Ms": "soon"})
    assert large.status_code == 413 and "exceeds the limit" in large.json()["error"]
    assert gzipped.status_code == 415 and "Content-Encoding gzip" in gzipped.json()["error"]
    assert bad_header.status_code == 400 and set(bad_header.json()) == {"error"}


async def test_our_own_routes_keep_their_error_shape(backend):
    async with served(backend) as client:
        response = await client.post("/classify", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and response.json()["error"]["type"] == "unsupported_media_type"

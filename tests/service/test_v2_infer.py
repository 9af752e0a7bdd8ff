"""The Open Inference Protocol v2 in process: JSON and binary tensors both ways, FP16, encoded
images, classification strings as Triton writes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.http as triton

from service.preprocess import prepare
from tests.helpers.app import served
from tests.helpers.images import sample_png
from tests.helpers.tiny import LABELS
from tests.helpers.v2 import (
    INFER,
    LENGTH,
    encoded,
    expected_logits,
    images,
    post,
    raw_request,
    tensor_input,
    triton_request,
    triton_result,
)

pytestmark = pytest.mark.anyio


# -- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
async def test_tensors_in_and_out_as_binary_or_json(backend, tiny_model, binary_in, binary_out):
    x = images(3)
    body, headers = triton_request(
        [tensor_input(x, binary_in)],
        [triton.InferRequestedOutput("logits", binary_data=binary_out)],
        request_id="req-7",
    )
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert (LENGTH.lower() in response.headers) == binary_out
    result = triton_result(response)
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_name"] == "dat"
    assert result.get_response()["model_version"] == "1"
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (3, 10)
    np.testing.assert_allclose(logits, expected_logits(tiny_model, x), atol=1e-5)
    assert backend.batches == [3]


async def test_all_outputs_in_binary_when_none_are_named(backend, tiny_model):
    """tritonclient's default: no 'outputs', binary_data_output true."""
    x = images(1)
    body, headers = triton_request([tensor_input(x, True)])
    assert b'"binary_data_output":true' in body
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
        plain = await client.post(
            INFER,
            content=raw_request(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "FP32",
                            "shape": [1, 3, 32, 32],
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
            )[0],
        )
    assert response.status_code == plain.status_code == 200
    assert (
        LENGTH.lower() in response.headers and response.headers["content-type"] == "application/octet-stream"
    )
    np.testing.assert_allclose(
        triton_result(response).as_numpy("logits"), expected_logits(tiny_model, x), atol=1e-5
    )
    # neither outputs nor binary_data_output: JSON
    assert LENGTH.lower() not in plain.headers and plain.headers["content-type"] == "application/json"
    (output,) = plain.json()["outputs"]
    assert output["shape"] == [1, 10] and len(output["data"]) == 10


async def test_json_data_may_be_nested_as_the_shape(backend, tiny_model):
    x = images(2)
    header = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 3, 32, 32], "data": x.tolist()}]}
    async with served(backend) as client:
        response = await client.post(INFER, json=header)
    assert response.status_code == 200
    logits = np.array(response.json()["outputs"][0]["data"], np.float32).reshape(2, 10)
    np.testing.assert_allclose(logits, expected_logits(tiny_model, x), atol=1e-5)


async def test_fp16_tensors_are_widened_to_float32(backend, tiny_model):
    x = images(2).astype(np.float16)
    async with served(backend) as client:
        binary = await post(client, [tensor_input(x, True)])
        as_json = await post(client, [tensor_input(x, False)])
    expected = expected_logits(tiny_model, x.astype(np.float32))
    for response in (binary, as_json):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(triton_result(response).as_numpy("logits"), expected, atol=1e-5)


async def test_encoded_images_as_bytes_go_through_the_classify_preprocessing(backend, tiny_model):
    pngs = [sample_png(1), sample_png(2)]
    tensor = triton.InferInput("image_bytes", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(pngs, dtype=np.object_))
    body, headers = triton_request([tensor], [triton.InferRequestedOutput("logits")])
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    x = torch.stack([prepare(p, tiny_model.info.preprocessing, 10**7).tensor for p in pngs]).numpy()
    np.testing.assert_allclose(
        triton_result(response).as_numpy("logits"), expected_logits(tiny_model, x), atol=1e-5
    )


async def test_bytes_input_of_shape_n_by_1(backend, tiny_model):
    pngs = [sample_png(3), sample_png(4)]
    blob = encoded(*pngs)
    body, headers = raw_request(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [2, 1],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    logits = np.array(response.json()["outputs"][0]["data"]).reshape(2, 10)
    x = torch.stack([prepare(p, tiny_model.info.preprocessing, 10**7).tensor for p in pngs]).numpy()
    np.testing.assert_allclose(logits, expected_logits(tiny_model, x), atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_classification_strings_as_triton_writes_them(backend, tiny_model, binary):
    x = images(2, seed=3)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary, class_count=3)]
    body, headers = triton_request([tensor_input(x, True)], outputs)
    async with served(backend) as client:
        response = await client.post(INFER, content=body, headers=headers)
        everything = await post(
            client, [tensor_input(x, True)], [triton.InferRequestedOutput("logits", class_count=50)]
        )
    assert response.status_code == 200, response.text
    result = triton_result(response)
    strings = result.as_numpy("logits")
    assert strings.shape == (2, 3) and result.get_output("logits")["datatype"] == "BYTES"
    logits = expected_logits(tiny_model, x)
    for row, image_logits in zip(strings, logits, strict=True):
        top = np.argsort(-image_logits, kind="stable")[:3]
        # binary BYTES come back as bytes, JSON ones as str (the same as from Triton)
        assert [s.decode() if isinstance(s, bytes) else s for s in row] == [
            f"{image_logits[i]:f}:{i}:{LABELS[i]}" for i in top
        ]
    # more classes than the model has: all of them (as Triton does)
    assert triton_result(everything).as_numpy("logits").shape == (2, 10)

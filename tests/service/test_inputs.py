"""Every error class, each with hostile input; and the odd-but-valid images that must work."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import served
from tests.helpers.images import image_bytes, sample_png

pytestmark = pytest.mark.anyio

PNG = {"content-type": "image/png"}


def png_header_bomb(side: int = 100_000) -> bytes:
    """A valid PNG signature + IHDR claiming side x side pixels, then a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * (side + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = image_bytes(Image.open(io.BytesIO(sample_png(1, (64, 64)))), "JPEG", quality=90)
    return data[: len(data) // 2]


def multipart(parts: list[tuple[str, str | None, bytes, str]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, data, ctype in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (
            (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n").encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def check_error(response, status: int, type_: str, words: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["type"] == type_
    assert words.lower() in error["message"].lower()
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# -- 400 / 413 / 415 / 422 with hostile bodies ------------------------------------------------


async def test_hostile_inputs_get_the_right_error_and_nothing_is_computed(backend):
    limits = {"max_body_bytes": 64 * 1024, "max_images_per_request": 4, "max_image_pixels": 1_000_000}
    zero_bomb = image_bytes(Image.new("L", (2000, 2000)))  # 4 Mpx of zeros in a few KB
    assert len(zero_bomb) < 20_000
    ico = image_bytes(Image.new("RGB", (16, 16)), "ICO")
    async with served(backend, **limits) as client:
        post = client.post
        cases = [
            (await post("/classify", content=b"", headers=PNG), 400, "bad_image", "empty"),
            (
                await post("/classify", content=truncated_jpeg(), headers={"content-type": "image/jpeg"}),
                400,
                "bad_image",
                "truncated",
            ),
            (
                await post("/classify", content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, headers=PNG),
                400,
                "bad_image",
                "cannot",
            ),
            (
                await post("/classify", content=b"hello, not an image", headers=PNG),
                400,
                "bad_image",
                "cannot identify",
            ),
            (
                await post("/classify", content=ico, headers={"content-type": "image/x-icon"}),
                400,
                "bad_image",
                "supported formats",
            ),
            (
                await post("/classify", content=png_header_bomb(), headers=PNG),
                413,
                "payload_too_large",
                "10,000,000,000 pixels exceeds the limit of 1,000,000",
            ),
            (
                await post("/classify", content=zero_bomb, headers=PNG),
                413,
                "payload_too_large",
                "4,000,000 pixels exceeds the limit of 1,000,000",
            ),
            (
                await post("/classify", content=image_bytes(Image.new("L", (1001, 1000))), headers=PNG),
                413,
                "payload_too_large",
                "1,001,000 pixels exceeds the limit",
            ),
            (await post("/classify", content=b"x" * 100_000, headers=PNG), 413, "payload_too_large", "limit"),
            (
                await post("/classify", content=b"hello", headers={"content-type": "text/plain"}),
                415,
                "unsupported_media_type",
                "text/plain",
            ),
            (
                await post("/classify", json={"image": "aGVsbG8="}),
                415,
                "unsupported_media_type",
                "application/json",
            ),
            (await post("/classify", content=sample_png(0)), 415, "unsupported_media_type", "none"),
        ]
    for response, status, type_, words in cases:
        check_error(response, status, type_, words)
    assert backend.batches == []


async def test_hostile_multipart_bodies(backend):
    image = sample_png(0)
    async with served(backend, max_body_bytes=64 * 1024, max_images_per_request=4) as client:

        def post(body: bytes, boundary: str | None = "XyZ", **kw):
            ctype = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
            return client.post("/classify", content=body, headers={"content-type": ctype}, **kw)

        async def stream(total: int):
            yield (
                b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
                b"Content-Type: image/png\r\n\r\n"
            )
            for _ in range(total // 8192):
                yield b"\x00" * 8192

        too_many = [("files", f"{i}.png", image, "image/png") for i in range(5)]
        huge = [("file", "big.png", b"\x00" * 100_000, "image/png")]
        cases = [
            (await post(multipart(too_many)), 413, "payload_too_large", "more than 4 images"),
            (await post(multipart(huge)), 413, "payload_too_large", "exceeds the limit"),
            # no Content-Length (chunked): refused while streaming, not after buffering it all
            (
                await client.post(
                    "/classify",
                    content=stream(10 * 2**20),
                    headers={"content-type": "multipart/form-data; boundary=XyZ"},
                ),
                413,
                "payload_too_large",
                "exceeds the limit",
            ),
            (
                await post(multipart([("file", "a.txt", b"hello", "text/plain")])),
                415,
                "unsupported_media_type",
                "text/plain",
            ),
            (
                await post(multipart([("image", "a.png", image, "image/png")])),
                422,
                "invalid_parameter",
                "unexpected form field 'image'",
            ),
            (await post(multipart([])), 422, "invalid_parameter", "no image"),
            (
                await post(multipart([("file", "a.png", image, "image/png")]), boundary=None),
                400,
                "bad_request",
                "boundary",
            ),
            (
                await post(multipart([("file", "a.png", image, "image/png")])[:-20]),
                400,
                "bad_request",
                "incomplete",
            ),
            (
                await post(
                    multipart(
                        [
                            ("files", "ok.png", image, "image/png"),
                            ("files", "bad.png", b"garbage", "image/png"),
                        ]
                    )
                ),
                400,
                "bad_image",
                "image 1 (bad.png)",
            ),
        ]
    for response, status, type_, words in cases:
        check_error(response, status, type_, words)
    assert backend.batches == []


@pytest.mark.parametrize(
    "query, words",
    [
        ("top_k=0", "top_k"),
        ("top_k=-3", "top_k"),
        ("top_k=abc", "top_k"),
        ("top_k=11", "between 1 and 10"),
        ("timeout_ms=0", "timeout_ms"),
        ("points=maybe", "points"),
    ],
)
async def test_bad_parameters_are_422(backend, query, words):
    async with served(backend) as client:
        response = await client.post(f"/classify?{query}", content=sample_png(0), headers=PNG)
    error = check_error(response, 422, "invalid_parameter", words)
    assert error["message"]
    assert backend.batches == []


async def test_points_can_be_disabled(backend):
    async with served(backend, allow_points=False) as client:
        response = await client.post("/classify?points=true", content=sample_png(0), headers=PNG)
    check_error(response, 422, "invalid_parameter", "disabled")


# -- odd but valid images ---------------------------------------------------------------------


def _gif_two_frames() -> tuple[bytes, bytes]:
    first = Image.open(io.BytesIO(sample_png(3, (24, 24)))).quantize(64)
    second = Image.open(io.BytesIO(sample_png(4, (24, 24)))).quantize(64)
    gif = image_bytes(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    frame = Image.open(io.BytesIO(gif))
    assert frame.n_frames == 2
    return gif, image_bytes(frame.convert("RGB"))


def _sixteen_bit() -> bytes:
    ramp = (np.arange(48 * 32, dtype=np.uint16).reshape(32, 48) * 40).astype(np.uint16)
    image = Image.fromarray(ramp)
    data = image_bytes(image)
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    return data


def _cmyk_jpeg() -> bytes:
    return image_bytes(Image.open(io.BytesIO(sample_png(5))).convert("CMYK"), "JPEG")


@pytest.mark.parametrize(
    "name, make, ctype",
    [
        ("1x1", lambda: image_bytes(Image.new("RGB", (1, 1), (9, 200, 30))), "image/png"),
        ("16-bit", _sixteen_bit, "image/png"),
        ("cmyk", _cmyk_jpeg, "image/jpeg"),
        ("rgba", lambda: image_bytes(Image.new("RGBA", (20, 10), (255, 0, 0, 0))), "image/png"),
        ("la", lambda: image_bytes(Image.new("LA", (20, 10), (10, 128))), "image/png"),
        ("palette", lambda: image_bytes(Image.new("P", (20, 10), 3)), "image/png"),
        ("bilevel", lambda: image_bytes(Image.new("1", (20, 10), 1), "BMP"), "image/bmp"),
        ("tiff", lambda: image_bytes(Image.open(io.BytesIO(sample_png(2))), "TIFF"), "image/tiff"),
        ("webp", lambda: image_bytes(Image.open(io.BytesIO(sample_png(2))), "WEBP"), "image/webp"),
        ("octet-stream", lambda: sample_png(2), "application/octet-stream"),
    ],
)
async def test_odd_but_valid_images_are_classified(backend, name, make, ctype):
    async with served(backend) as client:
        response = await client.post("/classify", content=make(), headers={"content-type": ctype})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["predictions"]) == 5


async def test_an_animated_gif_is_classified_by_its_first_frame(backend):
    gif, first_frame = _gif_two_frames()
    async with served(backend) as client:
        animated = (
            await client.post(
                "/classify", content=gif, headers={"content-type": "image/gif"}, params={"top_k": 10}
            )
        ).json()
        frame = (
            await client.post("/classify", content=first_frame, headers=PNG, params={"top_k": 10})
        ).json()
    assert animated["results"][0]["predictions"] == frame["results"][0]["predictions"]


async def test_a_body_that_arrives_too_slowly_is_408(backend):
    async def trickle():
        yield sample_png(0)[:10]
        await asyncio.sleep(5)  # never finishes within the request's 100 ms deadline
        yield b""

    async with served(backend) as client:
        response = await client.post("/classify", content=trickle(), params={"timeout_ms": 100}, headers=PNG)
    check_error(response, 408, "request_timeout", "did not arrive within 100 ms")
    assert backend.batches == []

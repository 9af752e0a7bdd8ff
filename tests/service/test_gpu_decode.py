"""``--gpu-decode``: which images go to the GPU decoder, how it batches, orients and fails.

The decoder's logic runs here on the CPU with a Pillow-backed decode function in place of
nvJPEG; nvJPEG itself is tested in test_gpu.py (GPU only).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from models import Preprocessing
from service import create_app
from service.backends.torch import TorchBackend
from service.errors import Unavailable
from service.gpu_decode import GpuJpegDecoder, JpegHeader, Refused, gpu_decodable, orient, read_header
from service.preprocess import decode as pillow_decode
from service.preprocess import open_image
from service.runtime import ModelRuntime
from tests.helpers.app import serve, served, settings
from tests.helpers.backends import CountingBackend
from tests.helpers.images import image_bytes, jpeg, photo, pillow_pixels, sample_png
from tests.helpers.metrics import metric

PREPROCESSING = Preprocessing(input_size=32, crop_pct=32 / 36)


def segment_at(data: bytes, marker: int) -> tuple[int, int]:
    """(start, end) of the first ``marker`` segment, its FF and length included."""
    start = data.index(bytes([0xFF, marker]))
    return start, start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")


def without_jfif(data: bytes) -> bytes:
    start, end = segment_at(data, 0xE0)
    return data[:start] + data[end:]


def with_bytes_after_jfif(data: bytes, junk: bytes) -> bytes:
    _, end = segment_at(data, 0xE0)
    return data[:end] + junk + data[end:]


def with_component_ids(data: bytes, ids: bytes) -> bytes:
    start, _ = segment_at(data, 0xC0)
    patched = bytearray(data)
    patched[start + 10 : start + 19 : 3] = ids  # after FF C0, length, precision, size, count
    return bytes(patched)


def with_adobe(data: bytes, transform: int) -> bytes:
    body = b"Adobe" + b"\x00\x64" + b"\x00\x00" * 2 + bytes([transform])
    return data[:2] + b"\xff\xee" + (2 + len(body)).to_bytes(2, "big") + body + data[2:]


def with_frame_marker(data: bytes, marker: int) -> bytes:
    start, _ = segment_at(data, 0xC0)
    return data[: start + 1] + bytes([marker]) + data[start + 2 :]


def with_two_frames(data: bytes) -> bytes:
    start, end = segment_at(data, 0xC0)
    return data[:end] + data[start:end] + data[end:]


def header_of(data: bytes) -> JpegHeader:
    header = read_header(data, 10**8)
    assert header is not None
    return header


# -- which images go to the GPU ----------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_pixels_as_pillows_exif_transpose(orientation):
    pixels = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image.getexif()[0x0112] = orientation
    upright = np.asarray(ImageOps.exif_transpose(image))
    ours = orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert ours.shape == upright.shape and (ours == upright).all()


def test_baseline_jpegs_go_to_the_gpu_with_their_upright_size():
    assert read_header(jpeg(photo(48, 40)), 10**8) == JpegHeader(48, 40, 1)
    assert read_header(jpeg(photo(48, 40), orientation=6), 10**8) == JpegHeader(40, 48, 6)
    assert read_header(jpeg(photo(48, 40), orientation=3), 10**8) == JpegHeader(48, 40, 3)
    assert read_header(jpeg(photo().convert("L")), 10**8) == JpegHeader(48, 40, 1)


@pytest.mark.parametrize(
    "why,data",
    [
        ("PNG", image_bytes(photo(), "PNG")),
        ("progressive", jpeg(progressive=True)),
        ("CMYK", image_bytes(photo().convert("CMYK"), "JPEG")),
        ("bytes after EOI", jpeg() + b"trailer"),
        ("truncated", jpeg()[:-200]),
        ("arithmetic-coded", with_frame_marker(jpeg(), 0xC9)),
        ("two frame headers", with_two_frames(jpeg())),
        ("Adobe transform 0: RGB", with_adobe(jpeg(), 0)),
        ("ids R, G, B without JFIF: RGB", with_component_ids(without_jfif(jpeg()), b"RGB")),
        ("ids R, G, B under JFIF: YCbCr to libjpeg, unsure elsewhere", with_component_ids(jpeg(), b"RGB")),
        ("bytes between segments", with_bytes_after_jfif(jpeg(), b"\x00")),
    ],
)
def test_other_images_stay_with_pillow(why, data):
    assert gpu_decodable(open_image(data, 10**8), data) is None, why


@pytest.mark.parametrize(
    "why,data",
    [
        ("ids 1, 2, 3 without JFIF", without_jfif(jpeg())),
        ("Adobe transform 1: YCbCr", with_adobe(jpeg(), 1)),
        ("extended sequential", with_frame_marker(jpeg(), 0xC1)),
    ],
)
def test_jpegs_every_decoder_reads_as_ycbcr_go_to_the_gpu(why, data):
    assert gpu_decodable(open_image(data, 10**8), data) == JpegHeader(48, 40, 1), why


def test_the_header_check_still_refuses_what_pillow_refuses():
    from service.errors import BadImage, PayloadTooLarge

    with pytest.raises(BadImage):
        read_header(b"not an image", 10**8)
    with pytest.raises(PayloadTooLarge):
        read_header(jpeg(photo(48, 40)), 48 * 40 - 1)


# -- the decoder -------------------------------------------------------------------------
class Decode:
    """Pillow in nvJPEG's place; a gate holds a call, ``refuse`` fails calls holding an image."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.seen: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.refuse: set[bytes] = set()
        self.shape: tuple[int, ...] | None = None

    def __call__(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        self.calls.append(len(encoded))
        self.seen += [e.numpy().tobytes() for e in encoded]
        self.entered.set()
        assert self.gate.wait(10)
        if any(e.numpy().tobytes() in self.refuse for e in encoded):
            raise RuntimeError("nvJPEG: bad bitstream")
        out = pillow_pixels(encoded)
        return [torch.zeros(self.shape, dtype=torch.uint8) for _ in out] if self.shape else out


@pytest.fixture
def decode():
    return Decode()


@pytest.fixture
def decoder(decode):
    decoder = GpuJpegDecoder(PREPROCESSING, torch.device("cpu"), decode).start()
    yield decoder
    decode.gate.set()
    decoder.stop(timeout=10)


def test_decoded_images_are_the_pillow_paths_inputs(decoder):
    for orientation in (1, 6, 8):
        data = jpeg(photo(48, 40, seed=orientation), orientation=orientation)
        ours = decoder.submit(data, header_of(data)).result(10)
        image, _ = pillow_decode(data, 10**8)  # Pillow, EXIF turn included
        reference = PREPROCESSING.from_pixels(torch.from_numpy(np.array(image)))
        assert ours.shape == (3, 32, 32) and torch.equal(ours, reference)


def test_images_that_queue_while_a_call_runs_are_decoded_in_one_call(decoder, decode):
    decode.gate.clear()
    first = decoder.submit(jpeg(), header_of(jpeg()))
    assert decode.entered.wait(10)
    datas = [jpeg(photo(seed=i)) for i in range(5)]
    futures = [decoder.submit(d, header_of(d)) for d in datas]
    decode.gate.set()
    first.result(10)
    results = [f.result(10) for f in futures]
    assert decode.calls == [1, 5]
    assert decoder.calls == 2 and decoder.images == 6
    assert not torch.equal(results[0], results[1])  # each image its own answer, in order
    for data, result in zip(datas, results, strict=True):
        assert torch.equal(result, decoder.submit(data, header_of(data)).result(10))


class CountingTransform:
    """The model's transform, recording how many images each call took."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls.append(pixels.shape[0])
        return PREPROCESSING.from_pixels(pixels)


def test_images_of_one_size_are_transformed_together(decode, monkeypatch):
    transform = CountingTransform()
    decoder = GpuJpegDecoder(transform, torch.device("cpu"), decode).start()
    monkeypatch.setattr("service.gpu_decode.TRANSFORM_PIXELS", 2 * 48 * 40)
    try:
        decode.gate.clear()
        futures = [decoder.submit(jpeg(), header_of(jpeg()))]
        assert decode.entered.wait(10)
        datas = [jpeg(photo(seed=i)) for i in range(3)] + [
            jpeg(photo(30, 60)),
            jpeg(photo(seed=4), orientation=6),
        ]
        futures += [decoder.submit(d, header_of(d)) for d in datas]
        decode.gate.set()
        results = [f.result(10) for f in futures]
        # 48x40 three times (two to a call within the budget), 30x60 once, 40x48 (turned) once
        assert transform.calls == [1, 2, 1, 1, 1]
        for data, result in zip(datas, results[1:], strict=True):
            image, _ = pillow_decode(data, 10**8)
            assert torch.equal(result, PREPROCESSING.from_pixels(torch.from_numpy(np.array(image))))
    finally:
        decoder.stop(timeout=10)


def test_a_call_holds_at_most_its_pixel_budget(decode):
    decoder = GpuJpegDecoder(PREPROCESSING, torch.device("cpu"), decode, max_batch_pixels=2 * 48 * 40).start()
    try:
        decode.gate.clear()
        futures = [decoder.submit(jpeg(), header_of(jpeg()))]
        assert decode.entered.wait(10)
        futures += [decoder.submit(jpeg(), header_of(jpeg())) for _ in range(5)]
        decode.gate.set()
        for future in futures:
            future.result(10)
        assert decode.calls == [1, 2, 2, 1]
    finally:
        decoder.stop(timeout=10)


def test_an_image_the_decoder_refuses_fails_alone(decoder, decode):
    datas = [jpeg(photo(seed=i)) for i in range(4)]
    decode.refuse.add(datas[2])
    decode.gate.clear()
    blocker = decoder.submit(jpeg(), header_of(jpeg()))
    assert decode.entered.wait(10)
    futures = [decoder.submit(d, header_of(d)) for d in datas]
    decode.gate.set()
    blocker.result(10)
    for i, future in enumerate(futures):
        if i == 2:
            with pytest.raises(Refused):
                future.result(10)
        else:
            assert future.result(10).shape == (3, 32, 32)
    # the call of four failed; its halves again, then the failing half's images alone
    assert decode.calls == [1, 4, 2, 2, 1, 1]


def test_pixels_of_another_size_than_the_header_says_are_refused(decoder, decode):
    decode.shape = (3, 8, 8)
    with pytest.raises(Refused, match="header says 48x40"):
        decoder.submit(jpeg(), header_of(jpeg())).result(10)


def test_a_cancelled_image_is_not_decoded(decoder, decode):
    decode.gate.clear()
    blocker = decoder.submit(jpeg(), header_of(jpeg()))
    assert decode.entered.wait(10)
    gone = decoder.submit(jpeg(), header_of(jpeg()))
    kept = decoder.submit(jpeg(), header_of(jpeg()))
    assert gone.cancel()
    decode.gate.set()
    blocker.result(10), kept.result(10)
    assert decode.calls == [1, 1]


def test_stopping_refuses_the_queued_images_and_new_ones(decoder, decode):
    decode.gate.clear()
    running = decoder.submit(jpeg(), header_of(jpeg()))
    assert decode.entered.wait(10)
    queued = decoder.submit(jpeg(), header_of(jpeg()))
    stopper = threading.Thread(target=decoder.stop, args=(10,))
    stopper.start()
    decode.gate.set()
    stopper.join(10)
    assert running.result(10).shape == (3, 32, 32)
    with pytest.raises(Refused):
        queued.result(10)
    with pytest.raises(Unavailable):
        decoder.submit(jpeg(), header_of(jpeg()))


# -- in the server -----------------------------------------------------------------------
@pytest.fixture
def cpu_as_gpu(monkeypatch, decode):
    """``--gpu-decode`` set up as on a GPU, with the CPU standing in for it and Pillow for nvJPEG."""
    monkeypatch.setattr(ModelRuntime, "_preprocess_device", lambda self, meta: torch.device("cpu"))
    monkeypatch.setattr("service.model_runtime.torchvision_decoder", lambda device: decode)


@pytest.mark.anyio
async def test_the_server_sends_jpegs_to_the_decoder_and_the_rest_to_pillow(tiny_model, decode, cpu_as_gpu):
    photos = [photo(56, 44, seed=i) for i in range(3)]
    turned, refused = jpeg(photos[0], orientation=6), jpeg(photos[2])
    decode.refuse.add(refused)
    files = [
        ("files", ("a.jpg", turned, "image/jpeg")),
        ("files", ("b.jpg", jpeg(photos[1], progressive=True), "image/jpeg")),
        ("files", ("c.jpg", refused, "image/jpeg")),
        ("files", ("d.png", sample_png(3, (50, 40)), "image/png")),
    ]
    answers = {}
    for on in (True, False):
        async with served(CountingBackend(tiny_model), max_batch_size=8, gpu_decode=on) as client:
            response = await client.post("/classify?top_k=3", files=files)
            broken = await client.post(
                "/classify", content=jpeg()[:-300], headers={"content-type": "image/jpeg"}
            )
            models = (await client.get("/models")).json()["models"][0]
            scraped = (await client.get("/metrics")).text
        assert response.status_code == 200, response.text
        assert broken.status_code == 400 and "truncated" in broken.json()["error"]["message"]
        answers[on] = response.json()["results"]
        if on:
            # the warm-up's test image, then a.jpg and c.jpg (refused there, so Pillow's);
            # b.jpg (progressive) and d.png never went
            assert set(decode.seen[1:]) == {turned, refused}
            assert models["gpu_decode"]["images"] == 3 and models["gpu_decode"]["refused"] == 1
            assert metric(scraped, "dat_gpu_decode_images_total", outcome="decoded") == 2
            assert metric(scraped, "dat_gpu_decode_images_total", outcome="refused") == 1
            assert metric(scraped, "dat_gpu_decode_batch_size_sum") == 3
        else:
            assert models["gpu_decode"] is None
    assert [(r["width"], r["height"]) for r in answers[True]] == [(44, 56), (56, 44), (56, 44), (50, 40)]
    for ours, pillow in zip(answers[True], answers[False], strict=True):
        assert ours == pillow  # Pillow in nvJPEG's place: the same inputs, the same answers


@pytest.mark.anyio
async def test_without_torchvision_gpu_decode_fails_the_start(tiny_model, monkeypatch):
    monkeypatch.setattr(ModelRuntime, "_preprocess_device", lambda self, meta: torch.device("cpu"))

    def missing(device):
        raise ImportError("No module named 'torchvision'")

    monkeypatch.setattr("service.model_runtime.torchvision_decoder", missing)
    app = create_app(settings(gpu_decode=True), backend=CountingBackend(tiny_model))
    with pytest.raises(RuntimeError, match="--gpu-decode needs torchvision built with nvJPEG"):
        async with serve(app):
            pass


@pytest.mark.anyio
async def test_gpu_decode_on_a_cpu_model_leaves_decoding_to_pillow(tiny_model, caplog):
    async with served(TorchBackend(tiny_model, device="cpu"), gpu_decode=True) as client:
        models = (await client.get("/models")).json()["models"][0]
        response = await client.post("/classify", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    assert models["gpu_decode"] is None and models["preprocessing_device"] == "cpu"
    assert "--gpu-decode needs a classifier on a GPU" in caplog.text


def test_warming_up_decodes_a_test_image_or_fails_the_start(decoder, decode):
    decoder.warm_up()
    assert decode.calls == [1]
    decode.refuse.add(decode.seen[0])
    with pytest.raises(RuntimeError, match="failed on a test image: nvJPEG: bad bitstream"):
        decoder.warm_up()

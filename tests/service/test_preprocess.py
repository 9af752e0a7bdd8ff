"""Decoding: orientation, every mode to RGB, limits; then exactly the model's own preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models import Letterbox, Preprocessing
from service.errors import BadImage, PayloadTooLarge
from service.preprocess import decode, prepare, to_rgb
from tests.helpers.images import image_bytes, sample_png

LIMIT = 10_000_000


def pixel(image: Image.Image) -> tuple[int, int, int]:
    return to_rgb(image).getpixel((0, 0))


def test_alpha_is_composited_on_white():
    assert pixel(Image.new("RGBA", (2, 2), (255, 0, 0, 0))) == (255, 255, 255)
    assert pixel(Image.new("RGBA", (2, 2), (255, 0, 0, 255))) == (255, 0, 0)
    assert pixel(Image.new("RGBA", (2, 2), (0, 0, 0, 128))) == (127, 127, 127)
    assert pixel(Image.new("LA", (2, 2), (0, 0))) == (255, 255, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert pixel(palette) == (255, 255, 255)


def test_sixteen_bit_and_float_samples_are_scaled_not_clipped():
    sixteen = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert sixteen.mode == "I;16"
    assert [to_rgb(sixteen).getpixel((x, 0)) for x in range(3)] == [(0,) * 3, (128,) * 3, (255,) * 3]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 7.0]], dtype=np.float32))
    assert floats.mode == "F"
    assert [to_rgb(floats).getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 255]


def test_sixteen_bit_png_round_trip():
    data = image_bytes(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)))
    image, fmt = decode(data, LIMIT)
    assert fmt == "PNG" and image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_other_modes_become_rgb():
    for mode, value in [
        ("L", 7),
        ("1", 1),
        ("CMYK", (0, 0, 0, 0)),
        ("YCbCr", (16, 128, 128)),
        ("I", 65535),
        ("P", 2),
    ]:
        image = to_rgb(Image.new(mode, (3, 2), value))
        assert image.mode == "RGB" and image.size == (3, 2), mode
    assert pixel(Image.new("CMYK", (1, 1), (0, 0, 0, 0))) == (255, 255, 255)


def test_exif_orientation_is_honoured():
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    data = image_bytes(image, "JPEG", exif=exif.tobytes(), quality=95)
    upright, fmt = decode(data, LIMIT)
    assert fmt == "JPEG" and upright.size == (10, 20)
    assert upright.getpixel((5, 2))[0] > 200 and upright.getpixel((5, 17))[0] < 50  # white on top


def test_limits_are_checked_on_the_header_before_decoding():
    with pytest.raises(PayloadTooLarge, match="100x101 = 10,100 pixels"):
        decode(image_bytes(Image.new("L", (100, 101))), 10_000)
    with pytest.raises(BadImage, match="empty"):
        decode(b"", LIMIT)


def test_the_tensor_is_exactly_the_models_preprocessing():
    preprocessing = Preprocessing(input_size=32, crop_pct=0.875, interpolation="bicubic")
    data = sample_png(7, (50, 37))
    decoded = prepare(data, preprocessing, LIMIT)
    expected = preprocessing(Image.open(io.BytesIO(data)).convert("RGB"))
    assert decoded.tensor.shape == (3, 32, 32) and decoded.tensor.dtype == torch.float32
    assert torch.equal(decoded.tensor, expected)
    assert (decoded.width, decoded.height, decoded.format) == (50, 37, "PNG")


@pytest.mark.parametrize("size", [(50, 37), (500, 375), (20, 30)])
def test_preprocessing_with_torch_agrees_with_pillow(size):
    """The path a GPU takes (``device``), run on the CPU: Pillow's values to one level."""
    preprocessing = Preprocessing(input_size=32, crop_pct=0.875, interpolation="bicubic")
    data = sample_png(3, size)
    on_cpu = prepare(data, preprocessing, LIMIT)
    with_torch = prepare(data, preprocessing, LIMIT, device=torch.device("cpu"))
    assert with_torch.tensor.shape == (3, 32, 32) and with_torch.tensor.dtype == torch.float32
    assert (with_torch.tensor - on_cpu.tensor).abs().max() <= 1 / 255 / 0.224 + 1e-6
    assert (with_torch.width, with_torch.height) == size


def test_a_letterbox_is_prepared_with_pillow_only():
    letterbox = Letterbox(32, interpolation="bilinear")
    data = sample_png(5, (50, 37))
    decoded = prepare(data, letterbox, LIMIT)
    assert torch.equal(decoded.tensor, letterbox(Image.open(io.BytesIO(data)).convert("RGB")))
    with pytest.raises(ValueError, match="Letterbox preprocessing does not run on a device"):
        prepare(data, letterbox, LIMIT, device=torch.device("cpu"))


def test_batches_mix_tensors_from_any_device():
    from service.batcher import _concatenate

    a, b = torch.zeros(1, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert _concatenate([a]) is a
    assert torch.equal(_concatenate([a, b]), torch.cat([a, b]))

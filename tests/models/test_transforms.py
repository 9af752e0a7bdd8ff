"""One preprocessing definition, matching the official evaluation transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import Preprocessing, create_model


def test_official_resize_rule():
    assert Preprocessing(224).resize_size == 256  # int(256 / 224 * 224)
    assert Preprocessing(384).resize_size == 438  # int(256 / 224 * 384)
    assert create_model("dat_base_384").info.preprocessing.input_size == 384


def test_pipeline_is_square_bicubic_resize_centre_crop_and_imagenet_normalisation():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    got = Preprocessing(224)(image)
    resized = np.asarray(image.resize((256, 256), Image.Resampling.BICUBIC), np.float32)[16:240, 16:240]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = ((resized / 255.0 - mean) / std).transpose(2, 0, 1)
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


@pytest.mark.parametrize("mean, std", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                       ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_normalisation_is_bit_identical_to_to_tensor_and_normalize(mean, std):
    # every value of every channel, once: the lookup must equal float32 (x / 255 - mean) / std
    pixels = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * 3, axis=-1)
    pixels[..., 1] = pixels[..., 1].T  # channels must not share their lookups by accident
    got = Preprocessing(16, crop_pct=1.0, mean=mean, std=std).normalize(Image.fromarray(pixels))
    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    want = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, want.numpy())


def test_round_trips_through_a_dict_and_rejects_bad_values():
    p = Preprocessing(96, crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)
    assert Preprocessing.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos5")
    with pytest.raises(ValueError, match="RGB"):
        Preprocessing(32)(Image.new("L", (40, 40)))


def _photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Blocks of colour with hard edges, where resizes disagree most."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((width, height), Image.Resampling.NEAREST)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(500, 375), (640, 480), (200, 150), (256, 256), (1500, 1000)])
def test_tensor_transform_matches_pillow_to_one_level(size, interpolation):
    p = Preprocessing(224, interpolation=interpolation)
    image = _photo_like(*size, seed=size[0])
    want = p(image)
    got = p.from_pixels(torch.from_numpy(np.array(image)))
    assert got.shape == want.shape and got.dtype == torch.float32
    one_level = 1 / 255 / min(p.std) + 1e-6
    differs = (got - want).abs() > 1e-5
    assert (got - want).abs().max() <= one_level
    # all but a few values in a thousand are Pillow's exactly (bicubic, the default: in 10^4)
    assert differs.float().mean() < (1e-3 if interpolation == "bicubic" else 1e-2)


def test_tensor_transform_of_a_batch_is_that_of_each_image():
    p = Preprocessing(32, crop_pct=32 / 36)
    images = torch.stack([torch.from_numpy(np.array(_photo_like(50, 40, seed=i))) for i in range(3)])
    batch = p.from_pixels(images)
    assert batch.shape == (3, 3, 32, 32)
    for image, row in zip(images, batch, strict=True):
        assert torch.equal(p.from_pixels(image), row)


def test_tensor_transform_refuses_what_it_cannot_match():
    with pytest.raises(ValueError, match="nearest"):
        Preprocessing(32, interpolation="nearest").from_pixels(torch.zeros(40, 40, 3, dtype=torch.uint8))
    assert not Preprocessing(32, interpolation="nearest").runs_on_tensors
    with pytest.raises(ValueError, match="uint8"):
        Preprocessing(32).from_pixels(torch.zeros(40, 40, 3))

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


def test_round_trips_through_a_dict_and_rejects_bad_values():
    p = Preprocessing(96, crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)
    assert Preprocessing.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos5")
    with pytest.raises(ValueError, match="RGB"):
        Preprocessing(32)(Image.new("L", (40, 40)))

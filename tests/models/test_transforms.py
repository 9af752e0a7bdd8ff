"""One preprocessing definition, matching the official evaluation transform."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models import KeepRatioResize, Letterbox, Preprocessing, Transform, create_model


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


@pytest.mark.parametrize("input_size", [224, 384, 32])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resizing_into_the_crop_gives_resize_then_crop_bit_for_bit(input_size, interpolation):
    """Only the kept pixels are computed; the values are those of the full resize and crop,
    across shapes on both sides of Pillow 13's pass-order rule (w=300: heights 344-376)."""
    p = Preprocessing(input_size, interpolation=interpolation)
    size, top = p.resize_size, int(round((p.resize_size - input_size) / 2.0))
    rng = np.random.default_rng(input_size)
    for width, height in [(500, 375), (375, 500), (300, 345), (300, 360), (300, 377), (257, 900), (90, 60)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        full = image.resize((size, size), getattr(Image.Resampling, interpolation.upper()))
        want = np.asarray(full.crop((top, top, top + input_size, top + input_size)))
        assert np.array_equal(np.asarray(p.resize_and_crop(image)), want), (width, height)


@pytest.mark.parametrize(
    "mean, std", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
)
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


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize(
    "size", [(500, 375), (375, 500), (200, 150), (256, 256), (256, 300), (300, 900), (1000, 1500)]
)
def test_uint8_transform_matches_pillow_to_two_levels_on_hard_edges(size, interpolation):
    """Blocks of random colours, the worst case: torch's 16-bit weights round a bicubic lobe
    differently from Pillow's 22-bit ones by up to 2 levels, on a few values in 10^3."""
    p = Preprocessing(224, interpolation=interpolation)
    image = _photo_like(*size, seed=size[0] + size[1])
    want = p(image)
    got = p.from_uint8(np.asarray(image))  # read-only, as Pillow hands it out
    assert got.shape == want.shape and got.dtype == torch.float32
    levels = ((got - want).abs() * torch.tensor(p.std).view(3, 1, 1) * 255).round()
    assert levels.max() <= (2 if interpolation == "bicubic" else 1)
    assert (levels > 0).float().mean() < 5e-3


@pytest.mark.parametrize("turn", [None, Image.Transpose.ROTATE_90])
def test_uint8_transform_of_a_photo_is_within_one_level_of_pillow(turn):
    """A photo-like JPEG, upright and on its side (Pillow 13 then runs its vertical pass first)."""
    from bench.server_cli import sample_jpeg

    p = Preprocessing(224)
    photo = Image.open(io.BytesIO(sample_jpeg())).convert("RGB")
    photo = photo if turn is None else photo.transpose(turn)
    levels = (
        (p.from_uint8(np.asarray(photo)) - p(photo)).abs() * torch.tensor(p.std).view(3, 1, 1) * 255
    ).round()
    assert levels.max() <= 1 and (levels > 0).float().mean() < 5e-3


COMPILED_SHAPES = [
    (500, 375),
    (375, 500),
    (300, 345),
    (300, 360),
    (300, 377),
    (257, 900),
    (90, 60),
    (1, 1),
    (3, 700),
]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("input_size, crop_pct", [(224, 224 / 256), (384, 224 / 256), (32, 1.0)])
def test_compiled_transform_is_pillows_bit_for_bit(input_size, crop_pct, interpolation):
    """Noise and hard edges, shrunk and enlarged, on both sides of Pillow 13's pass-order rule
    (w=300: heights 344-376), with and without a crop: every value is Pillow's."""
    p = Preprocessing(input_size, crop_pct=crop_pct, interpolation=interpolation)
    rng = np.random.default_rng(input_size)
    for width, height in COMPILED_SHAPES:
        noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for image in (noise, _photo_like(width, height, seed=width + height)):
            assert torch.equal(p.from_array(np.asarray(image)), p(image)), (width, height)


def test_compiled_transform_of_a_large_photo_and_of_strided_pixels():
    from bench.server_cli import sample_jpeg

    p = Preprocessing(224)
    photo = Image.open(io.BytesIO(sample_jpeg(2000, 1500))).convert("RGB")
    assert torch.equal(p.from_array(np.asarray(photo)), p(photo))
    pixels = np.asarray(photo)[::3, ::2]  # a view, not contiguous
    assert torch.equal(p.from_array(pixels), p(Image.fromarray(np.ascontiguousarray(pixels))))


def test_without_a_writable_cache_folder_the_kernels_compile_anyway(monkeypatch):
    """numba refuses ``cache=True`` where no folder is writable (a read-only file system)."""
    import numba

    from models.transforms import pillow_resample

    real = numba.njit

    def njit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'resample_rows': no locator available for file")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    monkeypatch.setattr(pillow_resample, "_kernels", pillow_resample._kernels.__wrapped__)  # made anew
    p = Preprocessing(32)
    image = _photo_like(90, 60, seed=3)
    assert torch.equal(p.from_array(np.asarray(image)), p(image))


@pytest.mark.parametrize("size", [(375, 500), (300, 900)])
def test_tensor_transform_follows_pillows_pass_order_on_tall_images(size):
    p = Preprocessing(224)
    image = _photo_like(*size, seed=1)
    got = p.from_pixels(torch.from_numpy(np.array(image)))
    assert (got - p(image)).abs().max() <= 1 / 255 / min(p.std) + 1e-6


@pytest.mark.parametrize("transform", ["from_array", "from_uint8"])
def test_the_cpu_transforms_refuse_what_they_cannot_match(transform):
    with pytest.raises(ValueError, match="nearest"):
        getattr(Preprocessing(32, interpolation="nearest"), transform)(np.zeros((40, 40, 3), np.uint8))
    for pixels in (
        np.zeros((40, 40, 3), np.float32),
        np.zeros((40, 40), np.uint8),
        np.zeros((40, 40, 4), np.uint8),
    ):
        with pytest.raises(ValueError, match="uint8"):
            getattr(Preprocessing(32), transform)(pixels)


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


# --------------------------------------------------------------------------- mmdet's test pipeline


def test_keep_ratio_resize_is_mmcvs_rescale():
    from models.transforms import KeepRatioResize

    fixture = KeepRatioResize((480, 320))
    assert fixture.resized_size(451, 300) == (480, 319)  # scale min(480 / 451, 320 / 300)
    assert fixture.padded_size(451, 300) == (480, 320)
    meta = fixture.meta(451, 300)
    assert meta.image_size == (319, 480) and meta.original_size == (300, 451)
    # mmdet's float32 factors, per axis: new / old
    assert meta.scale_factor == (np.float32(480 / 451), np.float32(319 / 300)) * 2
    release = KeepRatioResize()  # (1333, 800): the short side to 800 unless the long passes 1333
    assert release.resized_size(640, 480) == (1067, 800)
    assert release.resized_size(480, 640) == (800, 1067)  # bounds are long / short, not w / h
    assert release.resized_size(2000, 500) == (1333, 333)
    assert release.padded_size(640, 480) == (1088, 800)


def test_cv2_linear_resize_by_hand():
    from models.transforms.cv2_resize import cv2_resize_linear

    row = np.array([[[0], [255]]], np.uint8)  # 1 x 2, one channel
    # taps at -0.25 (clamped to column 0), 0.25, 0.75, 1.25 (clamped to 1), 11-bit weights:
    # 255 * 512 / 2048 = 63.75 -> 64, 255 * 1536 / 2048 = 191.25 -> 191
    assert cv2_resize_linear(row, 4, 1)[0, :, 0].tolist() == [0, 64, 191, 255]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert np.array_equal(cv2_resize_linear(pixels, 9, 7), pixels)  # same size: unchanged
    # rows are not clamped: an edge row mixes the first row with itself, and the SIMD rounding of
    # two floored halves loses a level where one rounding (a single row's resize) does not
    # (mmdet's input for the fixtures differs from an exact rounding on its first and last rows)
    two_rows = np.array([[[0], [14]], [[0], [14]]], np.uint8)
    assert cv2_resize_linear(two_rows, 4, 3)[:, 1, 0].tolist() == [3, 4, 3]
    assert cv2_resize_linear(two_rows[:1], 4, 1)[0, 1, 0] == 4  # 14 * 0.25 = 3.5 -> 4


def test_keep_ratio_resize_reproduces_mmdets_input():
    """The fixture's input: chelsea.jpg (451 x 300) through mmdet 2.28's test pipeline (cv2)."""
    from models.transforms import KeepRatioResize, preprocessing_from_dict
    from tests.helpers.paths import FIXTURES, official_fixture

    expected = official_fixture("mmdet_mask_rcnn_mini")["expected"]
    pipeline = KeepRatioResize((480, 320))
    image = Image.open(FIXTURES / "chelsea.jpg").convert("RGB")
    x, meta = pipeline.prepare(image)
    assert torch.equal(x, expected["input"][0])  # bit for bit, padding row included
    assert preprocessing_from_dict(pipeline.to_dict()) == pipeline


def test_keep_ratio_resize_channels_padding_and_batches():
    from models.transforms import KeepRatioResize

    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    tall = Image.fromarray(rng.integers(0, 256, (70, 20, 3), dtype=np.uint8))
    rgb = KeepRatioResize((64, 48), size_divisor=16)
    x, meta = rgb.prepare(small)
    assert meta.image_size == (38, 64) and x.shape == (3, 48, 64)
    assert (x[:, 38:] == 0).all() and (x[:, :38] != 0).any()
    bgr = KeepRatioResize((64, 48), size_divisor=16, to_rgb=False, mean=rgb.mean[::-1], std=rgb.std[::-1])
    assert torch.equal(bgr(small), x.flip(0))
    images, sizes, factors, metas = rgb.batch([small, tall])
    assert images.shape == (2, 3, 64, 64)  # each padded to 16, then to the largest
    assert sizes.tolist() == [[38.0, 64.0], [64.0, 18.0]]
    assert factors[1].tolist() == pytest.approx([18 / 20, 64 / 70] * 2)
    assert torch.equal(images[0, :, :48], x) and (images[0, :, 48:] == 0).all()


def test_preprocessing_and_letterbox_are_transforms():
    """What the service and the manifest take: a fixed-size transform of either kind (the
    keep-ratio resize of mmdet's detectors makes inputs of any size, so it is not one)."""
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    for transform in (Preprocessing(32), Letterbox(32)):
        assert isinstance(transform, Transform)
        assert transform(image).shape == (3, transform.input_size, transform.input_size)
        assert transform.to_dict()["input_size"] == 32
    assert not isinstance(KeepRatioResize(), Transform)

"""The CPU's host paths (simplejpeg, the compiled resize, torch's uint8 resize, JPEG drafts)
against the official transform: Pillow decoding, Pillow's bicubic resize."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.server_cli import sample_jpeg
from models import Preprocessing, create_model
from models.transforms import pillow_resample
from service import create_app, jpeg
from service.errors import BadImage
from service.preprocess import OFFICIAL, HostPath, decode, prepare
from service.runtime import host_path
from tests.helpers.app import serve, served, settings
from tests.helpers.images import image_bytes, sample_png

pytestmark = pytest.mark.skipif(not jpeg.available(), reason="simplejpeg is not installed")

LIMIT = 10**8
FAST = HostPath("simplejpeg", "torch")
SAMPLES = Path(__file__).resolve().parents[2] / "service" / "static" / "samples"


def photo(width: int = 500, height: int = 375) -> Image.Image:
    return Image.open(io.BytesIO(sample_jpeg(width, height))).convert("RGB")


def levels(a: torch.Tensor, b: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    """Differences between two model inputs in pixel levels (the inputs are level/255 - mean over std)."""
    return ((a - b).abs() * torch.tensor(p.std).view(3, 1, 1) * 255).round()


@pytest.mark.parametrize(
    "save",
    [
        {"quality": 90},  # 4:2:0, Pillow's default
        {"quality": 95, "subsampling": 0},  # 4:4:4
        {"quality": 75, "subsampling": 1},  # 4:2:2
        {"quality": 85, "progressive": True},
    ],
)
@pytest.mark.parametrize("size", [(500, 375), (333, 517), (17, 9)])
def test_simplejpeg_decodes_pillows_pixels_exactly(save, size):
    data = image_bytes(photo(*size), "JPEG", **save)
    pixels = jpeg.decode(data)
    assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    assert np.array_equal(pixels, np.asarray(decode(data, LIMIT)[0]))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_the_pixels_as_pillow_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = image_bytes(photo(60, 40), "JPEG", exif=exif.tobytes(), quality=95)
    upright, _ = decode(data, LIMIT)
    opened = Image.open(io.BytesIO(data))
    assert jpeg.orientation(opened) == orientation
    assert jpeg.upright_size(opened, orientation) == upright.size
    assert np.array_equal(jpeg.decode(data, orientation), np.asarray(upright))
    fast = prepare(data, Preprocessing(32), LIMIT, host=FAST)
    assert (fast.width, fast.height) == upright.size


def test_corrupt_and_truncated_jpegs_are_bad_images_on_the_fast_path():
    data = image_bytes(photo(), "JPEG", quality=90)
    with pytest.raises(BadImage, match="truncated or corrupt"):
        prepare(data[: len(data) // 2], Preprocessing(32), LIMIT, host=FAST)
    scrambled = data[:600] + bytes(range(256)) * 8 + data[600 + 2048 :]
    with pytest.raises(BadImage):
        prepare(scrambled, Preprocessing(32), LIMIT, host=FAST)


def test_only_plain_colour_jpegs_take_simplejpeg():
    def opened(image, fmt="JPEG"):
        return Image.open(io.BytesIO(image_bytes(image, fmt)))

    assert jpeg.takes(opened(photo(20, 10)))
    assert not jpeg.takes(opened(photo(20, 10).convert("L")))  # greyscale: Pillow's conversion
    assert not jpeg.takes(opened(photo(20, 10).convert("CMYK")))
    assert not jpeg.takes(opened(photo(20, 10), "PNG"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (40, 30)])
def test_fast_inputs_are_within_one_level_of_the_official_ones(fmt, size):
    p = Preprocessing(224)
    data = image_bytes(photo(*size), fmt)
    official = prepare(data, p, LIMIT)
    fast = prepare(data, p, LIMIT, host=FAST)
    assert (fast.width, fast.height, fast.format) == (official.width, official.height, fmt)
    diff = levels(fast.tensor, official.tensor, p)
    assert diff.max() <= 1 and (diff > 0).float().mean() < 5e-3


def test_a_detectors_preprocessing_takes_simplejpegs_pixels():
    from models import Letterbox

    data = image_bytes(photo(), "JPEG")
    letterbox = Letterbox(64)
    assert torch.equal(
        prepare(data, letterbox, LIMIT, host=FAST).tensor, prepare(data, letterbox, LIMIT).tensor
    )


def softmax(model, tensor: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(tensor[None]).softmax(-1)[0].numpy()


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir()))
def test_the_servers_default_path_gives_the_official_inputs_exactly(sample):
    """simplejpeg's pixels and Pillow's resize compiled: the default model's very inputs (it is
    sensitive: one value one level off moved its probabilities by up to 8e-3, measured)."""
    data = (SAMPLES / sample).read_bytes()
    p = create_model("dat_digits").info.preprocessing
    default = host_path(settings())
    assert torch.equal(prepare(data, p, LIMIT, host=default).tensor, p(decode(data, LIMIT)[0]))


@pytest.mark.anyio
async def test_the_server_decodes_with_simplejpeg_and_resizes_with_numba_by_default_and_says_so(
    backend, tiny_model
):
    data = image_bytes(photo(), "JPEG", quality=90)
    async with served(backend) as client:
        described = (await client.get("/models")).json()["models"][0]
        response = await client.post("/classify", content=data, headers={"content-type": "image/jpeg"})
    assert described["host_path"] == {"jpeg_decoder": "simplejpeg", "resize": "numba", "jpeg_draft": False}
    (result,) = response.json()["results"]
    official = softmax(tiny_model, tiny_model.info.preprocessing(decode(data, LIMIT)[0]))
    assert result["predictions"][0]["index"] == int(official.argmax())
    assert result["predictions"][0]["probability"] == pytest.approx(float(official.max()), abs=1e-6)


def test_settings_choose_the_host_path(monkeypatch):
    assert host_path(settings()) == HostPath("simplejpeg", "numba")
    assert host_path(settings(jpeg_decoder="pillow", cpu_resize="pillow")) == OFFICIAL
    assert host_path(settings(cpu_resize="pillow")) == HostPath("simplejpeg", "pillow")
    assert host_path(settings(cpu_resize="torch")) == FAST
    assert host_path(settings(jpeg_draft=True)).jpeg_draft
    monkeypatch.setattr(jpeg, "simplejpeg", None)
    monkeypatch.setattr(pillow_resample, "available", lambda: False)
    assert host_path(settings()) == OFFICIAL  # auto: what is installed
    with pytest.raises(ValueError, match="not installed"):
        HostPath("simplejpeg", "torch")
    with pytest.raises(ValueError, match="needs numba"):
        HostPath("pillow", "numba")
    with pytest.raises(ValueError, match="unknown host path"):
        HostPath("libjpeg", "torch")


@pytest.mark.parametrize("setting, package", [("jpeg_decoder", "simplejpeg"), ("cpu_resize", "numba")])
def test_asking_for_a_package_that_is_missing_is_a_clear_error(monkeypatch, setting, package):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name))
    with pytest.raises(ValueError, match=f"{setting} {package}: .* \\(pip install {package}\\)"):
        settings(**{setting: package})


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (300, 900), (40, 30)])
def test_the_compiled_resize_gives_the_official_inputs_exactly(fmt, size):
    p = Preprocessing(224)
    data = image_bytes(photo(*size), fmt)
    compiled = prepare(data, p, LIMIT, host=HostPath("simplejpeg", "numba"))
    assert torch.equal(compiled.tensor, prepare(data, p, LIMIT).tensor)


@pytest.mark.anyio
async def test_the_server_is_ready_only_once_its_resize_is_compiled(backend, monkeypatch):
    compiled = threading.Event()
    monkeypatch.setattr(HostPath, "warm", lambda self: compiled.wait(30))
    app = create_app(settings(), backend=backend)
    try:
        async with serve(app, wait_ready=False) as client:
            await asyncio.sleep(0.3)  # the model loads at once (warmup off): the compile holds readiness
            assert (await client.get("/health/ready")).status_code == 503
            compiled.set()
            await app.state.service.wait_ready()
            assert (await client.get("/health/ready")).status_code == 200
    finally:
        compiled.set()


def unbuildable_kernels():
    # what a numba that does not support the installed NumPy says on import
    raise ImportError("Numba needs NumPy 2.3 or less. Got NumPy 2.9.")


@pytest.mark.anyio
async def test_a_compiled_resize_that_cannot_build_gives_way_to_pillows_under_auto(
    backend, tiny_model, monkeypatch, caplog
):
    monkeypatch.setattr(pillow_resample, "_kernels", unbuildable_kernels)
    data = image_bytes(photo(), "JPEG", quality=90)
    async with served(backend) as client:  # ready: a missing speed-up is no reason not to serve
        described = (await client.get("/models")).json()["models"][0]
        response = await client.post("/classify", content=data, headers={"content-type": "image/jpeg"})
    assert described["host_path"]["resize"] == "pillow"
    assert "the compiled resize cannot be built" in caplog.text and "Numba needs NumPy" in caplog.text
    (result,) = response.json()["results"]
    official = softmax(tiny_model, tiny_model.info.preprocessing(decode(data, LIMIT)[0]))
    assert result["predictions"][0]["probability"] == pytest.approx(float(official.max()), abs=1e-6)


@pytest.mark.anyio
async def test_a_compiled_resize_asked_for_by_name_that_cannot_build_fails_the_start(backend, monkeypatch):
    monkeypatch.setattr(pillow_resample, "_kernels", unbuildable_kernels)
    app = create_app(settings(cpu_resize="numba"), backend=backend)
    async with serve(app, wait_ready=False) as client:
        with pytest.raises(
            RuntimeError, match="--cpu-resize numba: the compiled resize cannot be built .*Numba needs"
        ):
            await app.state.service.wait_ready()
        assert (await client.get("/health/ready")).status_code == 503


@pytest.mark.parametrize("decoder", ["simplejpeg", "pillow"])
def test_a_draft_decodes_large_jpegs_smaller_but_reports_their_size(decoder):
    p = Preprocessing(224)
    exif = Image.Exif()
    exif[0x0112] = 6  # on its side: the reported size is the upright one
    data = image_bytes(photo(2000, 1500), "JPEG", quality=90, exif=exif.tobytes())
    official = prepare(data, p, LIMIT)
    drafted = prepare(data, p, LIMIT, host=HostPath(decoder, "torch", jpeg_draft=True))
    assert (drafted.width, drafted.height) == (official.width, official.height) == (1500, 2000)
    diff = levels(drafted.tensor, official.tensor, p)
    assert 0 < diff.mean() < 4  # further than one level, but the same picture
    # both decoders scale the DCT with the same library: the same inputs
    other = "pillow" if decoder == "simplejpeg" else "simplejpeg"
    again = prepare(data, p, LIMIT, host=HostPath(other, "torch", jpeg_draft=True))
    assert torch.equal(drafted.tensor, again.tensor)


def test_a_draft_leaves_small_jpegs_whole():
    p = Preprocessing(224)
    data = image_bytes(photo(), "JPEG", quality=90)  # 500x375: half would be under 256
    host = HostPath("simplejpeg", "torch", jpeg_draft=True)
    assert torch.equal(prepare(data, p, LIMIT, host=host).tensor, prepare(data, p, LIMIT, host=FAST).tensor)


def test_pngs_are_unaffected_by_the_decoder_choice():
    p = Preprocessing(32)
    data = sample_png(3, (50, 37))
    assert torch.equal(
        prepare(data, p, LIMIT, host=FAST).tensor, p.from_uint8(np.asarray(decode(data, LIMIT)[0]))
    )

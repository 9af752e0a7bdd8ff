"""The embedded digits classifier: committed weights, held-out accuracy, samples, retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import create_model, get_spec, load_checkpoint
from training.classifier_data import held_out_split, render_digit
from training.classifier_samples import sample_label
from training.classifier_training import accuracy, predict, train
from training.digit_ink import load_rgb
from training.digits import main

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted(p for p in (REPO / "samples").glob("digit_*") if p.suffix in (".png", ".jpg"))


@pytest.fixture(scope="module")
def model():
    return create_model("dat_digits")


def test_committed_weights_load_and_fit_a_few_mb(model):
    spec = get_spec("dat_digits")
    assert spec.weights is not None and spec.weights.is_file()
    assert spec.weights.stat().st_size < 5_000_000
    assert model.info.name == "dat_digits"
    assert model.info.labels == [str(d) for d in range(10)]
    assert model.info.preprocessing == spec.preprocessing
    assert "D" in sum(model.config.stage_spec, ()), "the demo model must use deformable attention"
    record = json.loads(spec.weights.with_suffix(".json").read_text())
    assert record["held_out_top1"] >= 0.95
    assert record["command"].startswith("python -m training.digits train")


def test_held_out_split_is_fixed():
    images, labels = held_out_split()
    again, labels_again = held_out_split()
    assert len(images) == len(labels) == 360
    assert labels == labels_again and sorted(set(labels)) == list(range(10))
    assert all(im.mode == "RGB" and im.size == (64, 64) for im in images)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(images[:20], again[:20]))
    corner = images[0].getpixel((0, 0))
    assert corner == (255, 255, 255)  # black ink on white paper


def test_held_out_top1_through_serving_preprocessing(model):
    images, labels = held_out_split()
    assert accuracy(model, images, labels) >= 0.95


def test_held_out_top1_light_on_dark(model):
    images, labels = held_out_split(inverted=True)
    assert accuracy(model, images, labels) >= 0.93


def test_any_picture_size(model):
    images, labels = held_out_split()
    picked = range(0, 360, 36)
    want = torch.tensor([labels[i] for i in picked])
    correct = 0
    for size in (28, 100, 300):  # each size in one batch: each picture is resized on its own
        resized = [images[i].resize((size, size)) for i in picked]
        correct += int((predict(model, resized).argmax(-1) == want).sum())
    assert correct >= 0.9 * 3 * len(picked)


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_are_classified_correctly(model, path):
    image = load_rgb(path)
    assert min(image.size) >= 128
    probs = predict(model, [image])[0]
    assert model.info.labels[int(probs.argmax())] == sample_label(path)


def test_samples_exist():
    assert len(SAMPLES) >= 4
    assert {sample_label(p) for p in SAMPLES} <= set("0123456789")


def test_render_digit_polarity():
    import numpy as np

    pixels = np.zeros((8, 8), np.float32)
    pixels[2:6, 3:5] = 16
    dark_on_light = render_digit(pixels, 80)
    light_on_dark = render_digit(pixels, 80, inverted=True)
    assert dark_on_light.size == (80, 80)
    assert dark_on_light.getpixel((40, 40)) == (0, 0, 0)
    assert light_on_dark.getpixel((40, 40)) == (255, 255, 255)
    assert light_on_dark.getpixel((2, 2)) == (0, 0, 0)


def test_short_training_run_writes_loadable_weights(tmp_path):
    out = tmp_path / "digits.safetensors"
    lines: list[str] = []
    record = train(
        out, epochs=1, train_limit=64, font_digits=10, batch_size=32, eval_every=0, log=lines.append
    )
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert json.loads(out.with_suffix(".json").read_text())["epochs"] == 1
    assert 0.0 <= record["held_out_top1"] <= 1.0
    assert any("held-out top-1" in line for line in lines)
    reloaded = create_model("dat_digits", pretrained=False)
    load_checkpoint(reloaded, out)
    with torch.inference_mode():
        assert torch.isfinite(reloaded(torch.zeros(1, 3, 32, 32))).all()


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--out", "--epochs", "--seed", "--font-digits", "--train-limit"):
        assert option in out


def test_command_line_predict(capsys):
    assert main(["predict", *map(str, SAMPLES)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(SAMPLES)
    for path, line in zip(SAMPLES, lines):
        assert line.startswith(f"{path}: {sample_label(path)} ")

"""``bench decode``: Pillow's path and the GPU decoder's inputs, measured (speed is never asserted)."""

from __future__ import annotations

import torch


def test_bench_decode_measures_pillow_and_the_gpu_decoders_inputs(monkeypatch):
    from bench import decode as bench_decode
    from bench.server_cli import sample_jpeg
    from models import Preprocessing
    from tests.helpers.images import pillow_pixels

    data, preprocessing = sample_jpeg(120, 90), Preprocessing(input_size=32, crop_pct=32 / 36)
    report = bench_decode.run(data, preprocessing, "cpu", batch=4, seconds=0.05)
    assert report["pillow_one_thread"]["images_per_second"] > 0
    assert "needs a CUDA device" in report["gpu_decode"]["skipped"]
    # the GPU path's own code, with the CPU and Pillow standing in for the GPU and nvJPEG
    monkeypatch.setattr("service.gpu_decode.torchvision_decoder", lambda device: pillow_pixels)
    gpu = bench_decode.gpu_decode(data, preprocessing, torch.device("cpu"), batch=4, seconds=0.05)
    assert gpu["images_per_second"] > 0 and gpu["images"] % 4 == 0 and gpu["images"] >= 12
    # torch's resize against Pillow's: at most a level or two after normalising
    assert gpu["input_difference_levels"]["max"] <= 2.0

"""``bench model`` (our model's variants, exported backends, another model beside it), ``bench
profile`` and ``bench neighborhood`` run and report what they measured (speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bench import model as bench_model
from tests.helpers.bench_cli import run_bench
from tests.helpers.paths import REPO


@pytest.mark.slow
def test_model_benchmark_writes_every_variant_and_batch(tmp_path):
    run_bench(
        "model",
        "--model",
        "dat_digits",
        "--precisions",
        "fp32,bf16",
        "--batch-sizes",
        "1,2",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--interleave",
        "--out",
        str(tmp_path),
    )
    report = json.loads((tmp_path / "model.json").read_text())
    assert report["interleaved"] and report["device"] == "cpu"
    assert {(r["variant"], r["batch_size"]) for r in report["results"]} == {
        (v, b) for v in ("ours-fp32", "ours-bf16") for b in (1, 2)
    }
    assert all(r["images_per_second"] > 0 for r in report["results"])
    assert report["agreement"]["ours-fp32"]["top1_agreement_with_ours_fp32"] == 1.0
    assert {(r["variant"], r["reference"], r["batch_size"]) for r in report["paired_speedups"]} == {
        ("ours-bf16", "ours-fp32", 1),
        ("ours-bf16", "ours-fp32", 2),
    }
    assert all(len(r["durations_ms"]) == 2 for r in report["results"])
    assert (tmp_path / "model.md").read_text().startswith("| variant |")


def test_another_model_is_measured_beside_ours_with_paired_speed_ups(tmp_path):
    """--beside: DAT-T++ beside DAT-T is the DAT++ speed bar; here the digits model beside itself."""
    run_bench(
        "model",
        "--model",
        "dat_digits",
        "--beside",
        "dat_digits",
        "--precisions",
        "fp32,bf16",
        "--batch-sizes",
        "1",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--interleave",
        "--out",
        str(tmp_path),
    )
    report = json.loads((tmp_path / "model.json").read_text())
    assert {r["variant"] for r in report["results"]} == {
        "ours-fp32",
        "ours-bf16",
        "dat_digits-fp32",
        "dat_digits-bf16",
    }
    pairs = {(r["variant"], r["reference"]) for r in report["paired_speedups"]}
    assert ("ours-fp32", "dat_digits-fp32") in pairs and ("ours-bf16", "dat_digits-bf16") in pairs
    # a beside model's precisions are compared with its own fp32 (its own random weights)
    assert report["agreement"]["dat_digits-fp32"]["max_abs_diff_vs_ours_fp32"] == 0.0
    assert report["agreement"]["dat_digits-bf16"]["max_abs_diff_vs_ours_fp32"] > 0.0


def test_a_model_that_cannot_take_the_same_inputs_is_refused_beside():
    with pytest.raises(ValueError, match="--beside dat_digits_detector: a detection model at 128px"):
        bench_model.run("dat_digits", (1,), ("fp32",), beside=("dat_digits_detector",))


@pytest.mark.slow
def test_model_benchmark_measures_the_export_under_a_serving_backend_with_the_same_weights(tmp_path):
    out = run_bench(
        "model",
        "--model",
        "dat_digits",
        "--precisions",
        "fp32",
        "--batch-sizes",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--exported",
        "onnxruntime,tensorrt",
        "--out",
        str(tmp_path),
    )
    report = json.loads((tmp_path / "model.json").read_text())
    assert [r["variant"] for r in report["results"]][-1] == "onnxruntime-fp32"
    assert report["agreement"]["onnxruntime-fp32"]["max_abs_diff_vs_ours_fp32"] < 1e-3  # same weights
    if not torch.cuda.is_available():
        assert "tensorrt: skipped" in out


def test_the_model_benchmark_sweeps_batch_sizes_up_to_the_servers_default_max_batch():
    from bench.__main__ import DEFAULT_BATCH_SIZES
    from service.settings import Settings

    max_batch = Settings.model_fields["max_batch_size"].default
    assert DEFAULT_BATCH_SIZES[0] == 1 and DEFAULT_BATCH_SIZES[-1] == max_batch
    assert all(b == 2 * a for a, b in zip(DEFAULT_BATCH_SIZES, DEFAULT_BATCH_SIZES[1:]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_usage_error_not_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "profile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr and "Traceback" not in done.stderr


def test_bench_neighborhood_times_each_way_against_the_definition(tmp_path):
    out = tmp_path / "neighborhood.json"
    run_bench(
        "neighborhood",
        "--model",
        "dat_pp_tiny",
        "--batch-size",
        "1",
        "--precision",
        "fp32",
        "--tiles",
        "7,8x8",
        "--repeats",
        "1",
        "--out",
        str(out),
    )
    report = json.loads(out.read_text())
    assert [s["blocks"] for s in report["shapes"]] == [1, 2, 9]  # DAT-T++'s N blocks per stage
    assert set(report["variants"]) == {"blocked (default)", "blocked-7x7", "blocked-8x8", "windows"}
    for name, variant in report["variants"].items():
        assert variant["max_abs_diff_vs_definition"] < 1e-4, name
        assert variant["ms_median"] > 0


def test_parts_split_a_forward_by_part_without_counting_anything_twice():
    from bench import parts as bench_parts

    report = bench_parts.run(["dat_digits"], "fp32", batch_size=2, repeats=2)["dat_digits"]
    assert {"DeformableAttention", "MLPs", "layer norms"} <= set(report)
    assert all(report[k] > 0 for k in ("DeformableAttention", "MLPs"))
    hooked = sum(v for k, v in report.items() if k != "total" and not k.startswith("rest"))
    assert hooked <= report["total"] + 0.1  # a part nested in another would be counted twice
    assert "| total |" in bench_parts.markdown_table({"dat_digits": report})


def test_parts_over_rounds_keep_each_parts_fastest(monkeypatch):
    from bench import parts as bench_parts

    rounds = iter([{"MLPs": 3.0, "total": 9.0}, {"MLPs": 2.0, "total": 10.0}, {"MLPs": 4.0, "total": 8.0}])
    monkeypatch.setattr(bench_parts, "measure", lambda model, inputs, repeats: next(rounds))
    report = bench_parts.run(["dat_digits"], "fp32", batch_size=1, repeats=1, rounds=3)
    assert report == {"dat_digits": {"MLPs": 2.0, "total": 8.0}}
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        bench_parts.run(["dat_digits"], "fp32", batch_size=1, repeats=1, rounds=0)


def test_parts_refuse_a_model_without_dat_blocks():
    from bench import parts as bench_parts

    with pytest.raises(ValueError, match="DAT classifiers"):
        bench_parts.measure(torch.nn.Linear(2, 2), torch.zeros(1, 2), repeats=1)

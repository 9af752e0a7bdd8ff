"""``bench server`` (load on a real server, its timings, efficiency against the raw backend, Ctrl-C)
and ``bench ceiling`` run and report what they measured (speed itself is never asserted)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bench import server as bench_server
from bench.plots import medians_by_level
from bench.server import check_loopback
from tests.helpers.bench_cli import run_bench
from tests.helpers.paths import REPO


def test_load_is_only_aimed_at_loopback():
    check_loopback("http://127.0.0.1:8000")
    with pytest.raises(ValueError, match="only loopback"):
        check_loopback("http://192.0.2.1:8000")


@pytest.mark.slow
def test_server_benchmark_drives_a_real_server_and_reads_its_timings(tmp_path):
    out = run_bench(
        "server",
        "--server-args",
        "--model dat_digits --backend torch --detector none --no-warmup --max-batch-size 8",
        "--concurrency",
        "2",
        "--rates",
        "half",
        "--duration",
        "1",
        "--processes",
        "1",
        "--images-per-request",
        "2",
        "--measure-baseline",
        "--rounds",
        "2",
        "--out",
        str(tmp_path),
    )
    report = json.loads((tmp_path / "server.json").read_text())
    first, second, opened = report["runs"]
    for closed in (first, second):
        assert closed["baseline_ips"] > 0  # raw measured around each closed run
        assert (closed["mode"], closed["level"]) == ("closed", 2)
    assert (first["round"], second["round"]) == (1, 2)
    assert opened["mode"] == "open" and opened["baseline_ips"] is None and opened["round"] is None
    summary = report["efficiency_by_level"]["2 clients"]
    ratios = sorted(r["images_per_second"] / r["baseline_ips"] for r in (first, second))
    assert summary["rounds"] == 2 and (summary["min"], summary["max"]) == pytest.approx(ratios)
    for run in (first, second, opened):
        assert run["requests_ok"] > 0 and run["errors"] == {}
        assert run["images_ok"] == 2 * run["requests_ok"]
        assert set(run["server_ms"]) == {"preprocess_ms", "queue_ms", "inference_ms", "total_ms"}
        assert run["mean_batch_size"] >= 2  # each request's two images share a batch
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
    assert "raw backend alone" in out and "efficiency" in (tmp_path / "server.md").read_text()
    assert (tmp_path / "server_latency.png").stat().st_size > 0


def test_a_levels_progress_line_shows_its_efficiency_against_either_baseline(capsys):
    from bench.server_cli import _print_run

    run = bench_server.RunResult("closed", 8, 10.0, 80, 80, {}, 8.0, 8.0, {"p50": 1.0, "p99": 2.0})
    _print_run(run, None)
    assert "efficiency" not in capsys.readouterr().out
    _print_run(run, 10.0)  # a fixed --baseline-ips
    assert "efficiency 80%" in capsys.readouterr().out
    run.baseline_ips = 16.0  # measured around the run: it wins
    _print_run(run, 10.0)
    assert "efficiency 50%" in capsys.readouterr().out


def test_efficiency_by_level_summarises_the_rounds_of_each_closed_level():
    def run(level, ips, baseline=None, mode="closed"):
        return {"mode": mode, "level": level, "images_per_second": ips, "baseline_ips": baseline}

    runs = [
        run(8, 9.0, 10.0),
        run(16, 18.0, 20.0),
        run(8, 6.0, 12.0),
        run(16, 16.0),
        run(8, 7.0, 10.0),
        run(4, 5.0, 10.0),
        run(30.0, 20.0, mode="open"),
    ]
    summary = bench_server.efficiency_by_level(runs, baseline_ips=None)
    assert set(summary) == {"8 clients"}  # 16: one round with a baseline; 4: one round; open loop: none
    assert summary["8 clients"] == {
        "rounds": 3,
        "median": pytest.approx(0.7),
        "min": pytest.approx(0.5),
        "max": pytest.approx(0.9),
        "images_per_second": 7.0,
    }
    fixed = bench_server.efficiency_by_level(runs, baseline_ips=20.0)  # for the runs without their own
    assert fixed["16 clients"] == {
        "rounds": 2,
        "median": pytest.approx(0.85),
        "min": pytest.approx(0.8),
        "max": pytest.approx(0.9),
        "images_per_second": 17.0,
    }
    assert "| 8 clients | 3 | 7.0 | 70% | 50% | 90% |" in bench_server.efficiency_table(summary)


def test_the_latency_plot_draws_a_level_run_in_rounds_at_its_medians():
    def run(level, ips, p50, p99):
        return {"level": level, "images_per_second": ips, "latency_ms": {"p50": p50, "p99": p99}}

    runs = [
        run(16, 30.0, 500, 700),
        run(1, 13.0, 70, 90),
        run(16, 20.0, 700, 900),
        run(16, 25.0, 600, 800),
        run(1, 14.0, 75, 80),
    ]
    assert medians_by_level(runs) == [(13.5, {"p50": 72.5, "p99": 85.0}), (25.0, {"p50": 600, "p99": 800})]


def test_a_measured_baseline_needs_the_server_args():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "server", "--url", "http://127.0.0.1:9", "--measure-baseline"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--baseline-ips" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_stops_the_load_and_the_server_it_started(processes):
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "server",
            "--server-args",
            "--model dat_digits --backend torch --detector none --no-warmup",
            "--concurrency",
            "2",
            "--duration",
            "120",
            "--processes",
            processes,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    servers: list[int] = []
    try:
        while "closed loop" not in (line := bench.stdout.readline()):
            assert line, "the benchmark ended before its load began"
        found = subprocess.run(
            ["pgrep", "-P", str(bench.pid), "-f", "--", "service --host"], capture_output=True, text=True
        ).stdout
        servers = [int(pid) for pid in found.split()]
        assert len(servers) == 1
        time.sleep(2)  # well inside the load
        bench.send_signal(signal.SIGINT)
        bench.wait(30)
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # the server drains, then exits
                os.kill(servers[0], 0)
                time.sleep(0.1)
    finally:
        for pid in [bench.pid, *servers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        bench.wait()


def test_the_ceiling_preprocesses_a_full_batch_beside_the_raw_backend_each_round(monkeypatch):
    from bench import ceiling
    from bench.server_cli import sample_jpeg

    prepared = []

    def counting_prepare(data, preprocessing, max_pixels, **options):
        prepared.append(threading.current_thread().name)
        return real_prepare(data, preprocessing, max_pixels, **options)

    real_prepare = ceiling.prepare
    monkeypatch.setattr(ceiling, "prepare", counting_prepare)
    report = ceiling.run(
        "--model dat_digits --backend torch --detector none --max-batch-size 4 "
        "--max-images-per-request 4 "
        "--preprocess-workers 2",
        sample_jpeg(),
        rounds=3,
        warmup=1,
    )
    # two of the three variants preprocess 4 images in each of 1 warm-up and 3 rounds
    assert len(prepared) == 2 * 4 * (1 + 3)
    assert all(name.startswith("preprocess") for name in prepared)  # on the pool, as the server
    assert [m["variant"] for m in report["results"]] == ["raw", "preprocess-then-raw", "overlapped"]
    assert all(len(m["durations_ms"]) == 3 for m in report["results"])
    assert {row["variant"] for row in report["of_raw"]} == {"preprocess-then-raw", "overlapped"}
    assert "batch 4" in report["backend"] and report["preprocess_workers"] == 2
    table = ceiling.markdown_table(report)
    assert table.count("\n") == 4 and "| raw |" in table

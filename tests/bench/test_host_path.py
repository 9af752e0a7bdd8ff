"""bench decode's host paths and bench.host_capacity's summary (their structure, not speeds)."""

from __future__ import annotations

import json

import pytest

from service import jpeg

pytestmark = pytest.mark.skipif(not jpeg.available(), reason="simplejpeg is not installed")


def test_the_host_paths_are_timed_in_rounds_and_measured_against_the_official_inputs():
    from bench import host_path
    from bench.server_cli import sample_jpeg
    from models import Preprocessing

    report = host_path.run(sample_jpeg(120, 90), Preprocessing(64), 2, 2, ("dat_digits",))
    paths = {row["variant"]: row for row in report["paths"]}
    assert list(paths)[0] == host_path.TODAY and paths[host_path.TODAY]["of_reference_median"] == 1
    assert all(row["ms_median"] > 0 for row in paths.values())
    assert len(report["stages"]) == 6
    distances = report["distance_from_official"]
    assert distances[host_path.TODAY]["max_levels"] == 0
    assert distances[host_path.DEFAULT]["max_levels"] == 0  # bit for bit
    assert distances["--cpu-resize torch: simplejpeg, torch uint8"]["max_levels"] <= 2
    effects = report["model_effects"]["dat_digits"]["variants"]
    assert effects[host_path.DEFAULT]["max_probability_difference"] == 0
    assert distances["--cpu-resize pillow: simplejpeg, Pillow into the crop"]["max_levels"] == 0
    assert not [name for name in paths if "draft" in name]  # a small image: no drafts
    assert host_path.markdown(report).count("| today: Pillow decode, resize, crop |") == 2


def test_the_capacity_rounds_are_paired_with_one_process_on_pillows_path(tmp_path):
    from bench import host_capacity

    def write(round_: int, name: str, closed: float, p50: float) -> None:
        folder = tmp_path / f"round{round_}" / name
        folder.mkdir(parents=True)
        runs = [
            {"mode": "closed", "images_per_second": closed, "latency_ms": {"p50": 1, "p99": 2}},
            {"mode": "open", "images_per_second": closed / 2, "latency_ms": {"p50": p50, "p99": 3 * p50}},
        ]
        (folder / "server.json").write_text(json.dumps({"runs": runs}))

    for round_, slow in ((1, 1.0), (2, 0.5)):  # round 2 ran on a machine twice as busy
        write(round_, "w1-8img-pillow", 100 * slow, 10)
        write(round_, "w2-8img-default", 150 * slow, 12)
    rows = {r["configuration"]: r for r in host_capacity.summarise(host_capacity.collect(tmp_path))}
    assert rows["w2-8img-default"]["closed_images_per_second"] == [150, 75]
    assert rows["w2-8img-default"]["of_one_process_pillow_median"] == 1.5
    assert rows["w2-8img-default"]["half_load_p99_ms"] == 36
    assert host_capacity.main([str(tmp_path)]) == 0 and (tmp_path / "capacity.md").is_file()

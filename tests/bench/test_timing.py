"""The timing primitives every benchmark uses: variants measured in turns, speed-ups by round."""

from __future__ import annotations

from bench.timing import Measurement, measure_interleaved, paired_speedups


def test_interleaved_variants_take_turns_repeat_by_repeat():
    calls = []
    runs = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    measured = measure_interleaved(runs, 4, warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # one warm-up each
    assert calls[3:] == ["a", "b", "c"] * 3
    assert [m.variant for m in measured] == ["a", "b", "c"]
    assert all(
        m.repeats == 3 and m.batch_size == 4 and m.ips_min <= m.images_per_second <= m.ips_max
        for m in measured
    )


def test_speed_ups_are_taken_round_by_round():
    base = Measurement("base", 8, 0, 0, 0, 0, 3, durations_ms=[100.0, 200.0, 100.0])
    fast = Measurement("fast", 8, 0, 0, 0, 0, 3, durations_ms=[50.0, 100.0, 25.0])  # a slow spell in round 2
    (row,) = paired_speedups([base, fast], "base")
    assert (row["variant"], row["reference"], row["rounds"]) == ("fast", "base", 3)
    assert (row["min"], row["median"], row["max"]) == (2.0, 2.0, 4.0)

"""Timing helpers shared by the benchmarks: warm-up, repeats, median and spread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Measurement:
    variant: str
    batch_size: int
    images_per_second: float  # median over repeats
    ips_min: float
    ips_max: float
    latency_ms_p50: float
    repeats: int
    durations_ms: list[float] = field(default_factory=list)  # every timed run, in order

    def to_dict(self) -> dict:
        return asdict(self)


def measure(
    variant: str,
    batch_size: int,
    run: Callable[[], object],
    *,
    warmup: int,
    repeats: int,
    synchronize: Callable[[], None] = lambda: None,
    min_seconds: float = 0.0,
) -> Measurement:
    """Times ``run`` (one batch) ``repeats`` times after ``warmup`` untimed calls.

    With ``min_seconds``, keeps repeating until that much time was measured (short runs on
    a fast device are otherwise dominated by noise)."""
    for _ in range(warmup):
        run()
    synchronize()
    durations: list[float] = []
    while len(durations) < repeats or sum(durations) < min_seconds:
        start = time.perf_counter()
        run()
        synchronize()
        durations.append(time.perf_counter() - start)
    return _summary(variant, batch_size, durations)


def _summary(variant: str, batch_size: int, durations: list[float]) -> Measurement:
    rates = [batch_size / d for d in durations]
    return Measurement(
        variant,
        batch_size,
        statistics.median(rates),
        min(rates),
        max(rates),
        statistics.median(durations) * 1000,
        len(durations),
        [round(d * 1000, 3) for d in durations],
    )


def measure_interleaved(
    runs: dict[str, Callable[[], object]],
    batch_size: int,
    *,
    warmup: int,
    repeats: int,
    synchronize: Callable[[], None] = lambda: None,
) -> list[Measurement]:
    """Like :func:`measure` for several variants at once, taking turns: repeat i of every
    variant runs before repeat i + 1 of any, so a slow spell of a shared machine slows them
    all alike and their ratios hold."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    synchronize()
    durations: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            synchronize()
            durations[name].append(time.perf_counter() - start)
    return [_summary(name, batch_size, ds) for name, ds in durations.items()]


def paired_speedups(measured: list[Measurement], reference: str) -> list[dict]:
    """Each variant's speed-up over ``reference`` from interleaved runs, round by round (run i
    of both took turns, so a slow spell of the machine slows both): median, min and max of the
    per-round ratios, which hold on a noisy machine where a ratio of medians can drift."""
    by_name = {m.variant: m for m in measured}
    base = by_name[reference].durations_ms
    rows = []
    for m in measured:
        if m.variant == reference:
            continue
        ratios = sorted(b / d for b, d in zip(base, m.durations_ms))
        rows.append(
            {
                "variant": m.variant,
                "batch_size": m.batch_size,
                "reference": reference,
                "median": statistics.median(ratios),
                "min": ratios[0],
                "max": ratios[-1],
                "rounds": len(ratios),
            }
        )
    return rows

"""PNG plots of benchmark results (matplotlib, imported only when plotting)."""

from __future__ import annotations

import statistics
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_vs_batch(model_report: dict, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    variants: dict[str, list[tuple[int, float]]] = {}
    for r in model_report["results"]:
        variants.setdefault(r["variant"], []).append((r["batch_size"], r["images_per_second"]))
    for name, points in variants.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    machine = model_report.get("machine", {})
    where = machine.get("gpu") or machine.get("cpu", "")
    return _save(plt, fig, ax, f"{model_report['model']} on {where}", path)


def latency_vs_throughput(server_report: dict, path: str | Path) -> Path:
    """p50 and p99 against img/s, a point per level; a level run in several rounds (--rounds)
    is drawn at its rounds' medians, with each round as a faint point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, marker in (("closed", "o"), ("open", "s")):
        runs = [r for r in server_report["runs"] if r["mode"] == mode and r["latency_ms"]]
        if not runs:
            continue
        levels = medians_by_level(runs)
        of_rounds = " (median of rounds)" if len(levels) < len(runs) else ""
        for q, style in (("p50", "-"), ("p99", "--")):
            (line,) = ax.plot(
                [ips for ips, _ in levels],
                [ms[q] for _, ms in levels],
                style,
                marker=marker,
                label=f"{mode} loop {q}{of_rounds}",
            )
            if of_rounds:
                ax.plot(
                    [r["images_per_second"] for r in runs],
                    [r["latency_ms"][q] for r in runs],
                    marker,
                    linestyle="none",
                    color=line.get_color(),
                    alpha=0.3,
                )
    ax.set_xlabel("images / s served")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    return _save(plt, fig, ax, server_report.get("title", "server"), path)


def medians_by_level(runs: list[dict]) -> list[tuple[float, dict[str, float]]]:
    """(median img/s, median p50 and p99) per level, in order of img/s."""
    by_level: dict[float, list[dict]] = {}
    for r in runs:
        by_level.setdefault(r["level"], []).append(r)
    points = [
        (
            statistics.median(r["images_per_second"] for r in group),
            {q: statistics.median(r["latency_ms"][q] for r in group) for q in ("p50", "p99")},
        )
        for group in by_level.values()
    ]
    return sorted(points, key=lambda point: point[0])


def _save(plt, fig, ax, title: str, path: str | Path) -> Path:
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)

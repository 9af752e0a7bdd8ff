"""``python -m bench.host_capacity OUT [REFERENCE]``: the rounds of ``bench/host_capacity.sh``
(or ``bench/frontends.sh``, REFERENCE ``single``) in one table.

Per configuration: the closed-loop img/s of each round and their median, the median over
rounds of its img/s divided by that round's reference (one process, today's Pillow path, the
same images per request: the rounds took turns, so a slow spell slows both sides of a ratio),
and p50 / p99 latency at half load.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def collect(out: Path) -> dict[str, list[dict[str, Any]]]:
    """{configuration: [its server.json per round, in round order]}."""
    found: dict[str, list[dict[str, Any]]] = {}
    for round_dir in sorted(out.glob("round*"), key=lambda p: int(p.name.removeprefix("round"))):
        for config in sorted(round_dir.iterdir()):
            report = config / "server.json"
            if report.is_file():
                found.setdefault(config.name, []).append(json.loads(report.read_text()))
    return found


def _level(report: dict[str, Any], mode: str) -> dict[str, Any] | None:
    return next((r for r in report["runs"] if r["mode"] == mode), None)


def summarise(found: dict[str, list[dict[str, Any]]], reference_name: str = "pillow") -> list[dict[str, Any]]:
    """``reference_name``: the one-process configuration (w1-<n>img-<name>) each is paired with."""
    rows = []
    for name, reports in found.items():
        per = name.split("-")[1]  # w1-8img-default -> 8img
        reference = found.get(f"w1-{per}-{reference_name}", [])
        closed = [_level(r, "closed")["images_per_second"] for r in reports]
        ratios = [
            c / _level(ref, "closed")["images_per_second"] for c, ref in zip(closed, reference, strict=False)
        ]
        half = [h for r in reports if (h := _level(r, "open"))]
        rows.append(
            {
                "configuration": name,
                "closed_images_per_second": [round(c, 1) for c in closed],
                "closed_median": round(statistics.median(closed), 1),
                "of_one_process_pillow_median": round(statistics.median(ratios), 2) if ratios else None,
                "half_load_p50_ms": round(statistics.median(h["latency_ms"]["p50"] for h in half), 1)
                if half
                else None,
                "half_load_p99_ms": round(statistics.median(h["latency_ms"]["p99"] for h in half), 1)
                if half
                else None,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], reference_name: str = "pillow") -> str:
    lines = [
        "| configuration | img/s per round (closed loop) | median | "
        f"of w1 {reference_name} (paired) "
        "| p50 / p99 ms at half load |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        rounds = ", ".join(f"{v:g}" for v in r["closed_images_per_second"])
        ratio = (
            "" if r["of_one_process_pillow_median"] is None else f"{r['of_one_process_pillow_median']:.2f}"
        )
        lines.append(
            f"| {r['configuration']} | {rounds} | {r['closed_median']:g} | {ratio} "
            f"| {r['half_load_p50_ms']} / {r['half_load_p99_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(
            "usage: python -m bench.host_capacity OUT [REFERENCE] (the folder bench/host_capacity.sh wrote)"
        )
        return 2
    out = Path(argv[0])
    reference = argv[1] if len(argv) == 2 else "pillow"
    rows = summarise(collect(out), reference)
    (out / "capacity.json").write_text(json.dumps(rows, indent=2))
    text = markdown(rows, reference)
    (out / "capacity.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

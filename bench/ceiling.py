"""``python -m bench ceiling``: the most a server can deliver on its host, before HTTP.

The server decodes and preprocesses every image on the host's CPU cores, beside the model. With
the raw backend the server runs (built from the same ``--server-args``, at its max batch) and
the service's own host path (its settings' decoder and resize) on a pool of its
``--preprocess-workers`` threads, three variants take turns, round by round:

- raw: the batch alone, the denominator of ``bench server``'s efficiency;
- preprocess-then-raw: the batch's JPEGs decoded and preprocessed, then the batch;
- overlapped: the same JPEGs preprocessed while the batch runs.

Their img/s over raw's, paired round by round, bound what the server can reach before HTTP and
the load generator take their share of the same cores. Where the model's threads use every core
(a CPU server), both variants add the same work to the batch; where the model runs on a GPU,
overlapped shows how much of the preprocessing hides behind it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.preprocess import prepare
from service.runtime import host_path, keep_aten_serial

from .baseline import RawBackend
from .timing import measure_interleaved, paired_speedups

REFERENCE = "raw"


def run(server_args: str, data: bytes, rounds: int, warmup: int = 2) -> dict[str, Any]:
    raw = RawBackend(server_args)
    settings, preprocessing = raw.settings, raw.meta.preprocessing
    workers, host = settings.preprocess_workers, host_path(settings)
    with ThreadPoolExecutor(workers, thread_name_prefix="preprocess", initializer=keep_aten_serial) as pool:

        def preprocess_batch():
            return [
                pool.submit(prepare, data, preprocessing, settings.max_image_pixels, host=host)
                for _ in range(raw.batch)
            ]

        def alone():
            raw.backend.run(raw.inputs)

        def preprocess_then_raw():
            for future in preprocess_batch():
                future.result()
            alone()

        def overlapped():
            futures = preprocess_batch()
            alone()
            for future in futures:
                future.result()

        measured = measure_interleaved(
            {REFERENCE: alone, "preprocess-then-raw": preprocess_then_raw, "overlapped": overlapped},
            raw.batch,
            warmup=warmup,
            repeats=rounds,
        )
    return {
        "backend": raw.describe(),
        "preprocess_workers": workers,
        "image_bytes": len(data),
        "rounds": rounds,
        "results": [m.to_dict() for m in measured],
        "of_raw": paired_speedups(measured, REFERENCE),
    }


def markdown_table(report: dict[str, Any]) -> str:
    of_raw = {row["variant"]: row for row in report["of_raw"]}
    lines = [
        "| variant | img/s (median) | min-max | of raw, paired rounds: median | min-max |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in report["results"]:
        row = of_raw.get(m["variant"])
        share = f"{row['median']:.0%} | {row['min']:.0%}-{row['max']:.0%}" if row else "100% | -"
        lines.append(
            f"| {m['variant']} | {m['images_per_second']:.1f} | {m['ips_min']:.1f}-"
            f"{m['ips_max']:.1f} | {share} |"
        )
    return "\n".join(lines)

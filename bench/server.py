"""``python -m bench server``: drives a running server (or one it starts) with real HTTP load.

Closed loop: N clients each send the next request as soon as the last one answered.
Open loop: requests arrive at a fixed mean rate (Poisson), whatever the answers do; latency
is measured from each request's scheduled time, so a stalled server cannot hide its queue.

Only loopback addresses are accepted as targets. Every run is bounded by ``--duration``.
The batch sizes the server formed are read from its ``/metrics`` (``dat_batch_size``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from .http_client import ConnectionPool, ResponseError, prepare_request


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"refusing to load-test {url}: only loopback targets are allowed")


@dataclass
class RunResult:
    mode: str  # "closed" or "open"
    level: float  # concurrency (closed) or offered requests/s (open)
    duration_s: float
    requests_ok: int
    images_ok: int
    errors: dict[str, int]
    images_per_second: float
    requests_per_second: float
    latency_ms: dict[str, float]
    # the mean size of the batch an image ran in (from the responses, so right with --workers)
    mean_batch_size: float | None = None
    # the server's dat_batch_size histogram over the run (one worker's with --workers)
    batch_size_buckets: dict[str, float] = field(default_factory=dict)
    # the server's own account of its successful requests (their ``timing``), mean ms per stage
    server_ms: dict[str, float] = field(default_factory=dict)
    # the raw backend alone, measured just before and after this run (--measure-baseline)
    baseline_ips: float | None = None
    # which of the --rounds this run was (None without --rounds)
    round: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


# -- the client side, run in worker processes ---------------------------------------------

_STAGES = ("preprocess_ms", "queue_ms", "inference_ms", "total_ms", "batch_size")
_TIMEOUT_S = 60.0


async def _post(pool: ConnectionPool) -> tuple[int | str, tuple]:
    """(status or error name, the server's stage timings and batch size of a 200)."""
    try:
        status, body = await pool.send(_TIMEOUT_S)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ResponseError) as exc:
        return type(exc).__name__, ()
    if status != 200:
        return status, ()
    timing = json.loads(body).get("timing", {})
    return 200, tuple(float(timing.get(k, 0.0)) for k in _STAGES)


async def _closed_loop(url, request, clients, duration):
    records = []
    deadline = time.perf_counter() + duration
    pools = [ConnectionPool(url, request) for _ in range(clients)]  # one connection per client

    async def one_client(pool):
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            status, timing = await _post(pool)
            records.append((start, time.perf_counter() - start, status, timing))
        pool.close()

    await asyncio.gather(*(one_client(pool) for pool in pools))
    return records


async def _open_loop(url, request, rate, duration, seed):
    records = []
    rng = random.Random(seed)
    pool = ConnectionPool(url, request)

    async def one(scheduled):
        status, timing = await _post(pool)
        records.append((scheduled, time.perf_counter() - scheduled, status, timing))

    tasks = []
    start = time.perf_counter()
    t = start
    while t < start + duration:
        t += rng.expovariate(rate)
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(t)))
    await asyncio.gather(*tasks)
    pool.close()
    return records


def _worker(args) -> list:
    mode, url, body, content_type, per_request, level, duration, seed = args
    request = prepare_request(url, body, content_type, per_request)
    if mode == "closed":
        return _run(_closed_loop(url, request, int(level), duration))
    return _run(_open_loop(url, request, level, duration, seed))


def _run(coroutine):
    """On uvloop where it is installed: the client's own CPU time is the server's loss."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- orchestration ------------------------------------------------------------------------


def read_batch_histogram(base_url: str) -> dict[str, float]:
    """The cumulative buckets of the server's dat_batch_size histogram."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        # the detector's batches are not this load's
        if line.startswith("dat_batch_size_bucket") and 'task="classification"' in line:
            buckets[re.search(r'le="([^"]+)"', line).group(1)] = float(line.split()[-1])
    return buckets


def run_level(
    base_url: str,
    mode: str,
    level: float,
    duration: float,
    body: bytes,
    content_type: str,
    images_per_request: int,
    processes: int,
) -> RunResult:
    url = f"{base_url}/classify"
    processes = max(1, min(processes, int(level) if mode == "closed" else processes))
    shares = []
    for i in range(processes):
        if mode == "closed":
            share = int(level) // processes + (1 if i < int(level) % processes else 0)
        else:
            share = level / processes
        shares.append((mode, url, body, content_type, images_per_request, share, duration, i))
    before = read_batch_histogram(base_url)
    if processes == 1:
        records = _worker(shares[0])
    else:
        # Ctrl-C reaches the parent alone, which stops the pool (and the server it started)
        with mp.get_context("spawn").Pool(
            processes, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)
        ) as pool:
            records = [r for part in pool.map(_worker, shares) for r in part]
    after = read_batch_histogram(base_url)
    # the load's own span (perf_counter is system-wide on Linux), not the client processes' start-up
    elapsed = (
        max((r[0] + r[1] for r in records), default=1.0) - min((r[0] for r in records), default=0.0)
        if records
        else duration
    )

    ok = [r for r in records if r[2] == 200]
    errors = Counter(str(r[2]) for r in records if r[2] != 200)
    means = {k: statistics.fmean(r[3][i] for r in ok) for i, k in enumerate(_STAGES)} if ok else {}
    return RunResult(
        mode=mode,
        level=level,
        duration_s=elapsed,
        requests_ok=len(ok),
        images_ok=len(ok) * images_per_request,
        errors=dict(errors),
        images_per_second=len(ok) * images_per_request / elapsed,
        requests_per_second=len(ok) / elapsed,
        latency_ms=_percentiles([r[1] for r in ok]),
        mean_batch_size=means.pop("batch_size", None),
        batch_size_buckets={le: after.get(le, 0) - before.get(le, 0) for le in after},
        server_ms=means,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m service`` on a free loopback port, until ``stop``."""

    def __init__(self, args: list[str], log_path: Path | None = None, ready_timeout: float = 600):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} before it was ready")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def stages(server_ms: dict[str, float]) -> str:
    if not server_ms:
        return "-"
    return " / ".join(f"{server_ms[k]:.1f}" for k in ("preprocess_ms", "queue_ms", "inference_ms"))


def markdown_table(runs: list[dict], baseline_ips: float | None) -> str:
    """One row per run; an efficiency column (server img/s / raw backend img/s) against each
    run's own measured baseline, or ``baseline_ips`` for the runs without one."""
    with_efficiency = bool(baseline_ips) or any(r.get("baseline_ips") for r in runs)
    header = (
        "| mode | level | img/s | req/s | p50 ms | p95 ms | p99 ms | errors | batch per image | "
        "server preprocess / queue / inference ms |"
        + (" raw img/s | efficiency |" if with_efficiency else "")
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in runs:
        level = _level_name(r) + (f", round {r['round']}" if r.get("round") else "")
        lat = r["latency_ms"]
        errors = sum(r["errors"].values())
        mean_batch = f"{r['mean_batch_size']:.1f}" if r["mean_batch_size"] else "-"
        row = (
            f"| {r['mode']} | {level} | {r['images_per_second']:.1f} | "
            f"{r['requests_per_second']:.1f} | {lat.get('p50', 0):.1f} | {lat.get('p95', 0):.1f} | "
            f"{lat.get('p99', 0):.1f} | {errors} | {mean_batch} | {stages(r.get('server_ms', {}))} |"
        )
        if with_efficiency:
            raw = raw_ips(r, baseline_ips)
            row += f" {raw:.1f} | {r['images_per_second'] / raw:.0%} |" if raw else " - | - |"
        lines.append(row)
    return "\n".join(lines)


def raw_ips(run: dict, baseline_ips: float | None) -> float | None:
    """The raw backend's img/s a run is measured against: its own (--measure-baseline), else
    the fixed --baseline-ips."""
    return run.get("baseline_ips") or baseline_ips


def _level_name(run: dict) -> str:
    return f"{int(run['level'])} clients" if run["mode"] == "closed" else f"{run['level']:g} req/s"


def efficiency_by_level(runs: list[dict], baseline_ips: float | None) -> dict[str, dict]:
    """Each closed-loop level run more than once (--rounds): the median, min and max of its
    rounds' efficiencies and its median img/s. A median of interleaved rounds is what holds
    on a host whose speed drifts by tens of percent within minutes."""
    by_level: dict[str, list[dict]] = {}
    for r in runs:
        if r["mode"] == "closed" and raw_ips(r, baseline_ips):
            by_level.setdefault(_level_name(r), []).append(r)
    summary = {}
    for level, level_runs in by_level.items():
        if len(level_runs) < 2:
            continue
        ratios = [r["images_per_second"] / raw_ips(r, baseline_ips) for r in level_runs]
        summary[level] = {
            "rounds": len(level_runs),
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "images_per_second": statistics.median(r["images_per_second"] for r in level_runs),
        }
    return summary


def efficiency_table(summary: dict[str, dict]) -> str:
    lines = [
        "| level | rounds | median img/s | efficiency: median | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for level, s in summary.items():
        lines.append(
            f"| {level} | {s['rounds']} | {s['images_per_second']:.1f} | {s['median']:.0%} | "
            f"{s['min']:.0%} | {s['max']:.0%} |"
        )
    return "\n".join(lines)

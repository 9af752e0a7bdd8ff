"""The machine a benchmark runs on: its description for the report, and the threads it may use."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch


def machine_description(device: str) -> dict:
    info = {
        "cpu": _cpu_name(),
        "cores": torch.get_num_threads(),
        "allocator": host_allocator(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name, cuda=torch.version.cuda, gpu_memory_gib=round(props.total_memory / 2**30, 1)
        )
    return info


def host_allocator() -> str:
    """How this process's malloc treats freed memory (runtimes.allocator)."""
    from runtimes.allocator import keeps_freed_memory

    return "glibc, keeps freed memory" if keeps_freed_memory() else "as the C library and environment set it"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextlib.contextmanager
def threads(n: int | None):
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

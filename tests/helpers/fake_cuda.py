"""A CUDA device on the CPU, for the GPU code paths in CI (with :mod:`tests.helpers.fake_tensorrt`
and :mod:`tests.helpers.fake_onnxruntime`): a crash like
``torch.cuda.set_device(torch.device("cuda"))`` shows up in CI instead of on the first GPU host.

:class:`FakeCuda` patches ``torch.cuda`` (a given number of GPUs, streams, ``set_device`` with
PyTorch's own index check) and maps CUDA tensors to CPU memory (``Tensor.to`` and
``torch.empty``), recording every device asked for.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch.cuda._utils import _get_device_index


class FakeStream:
    _next_handle = 0x5EED

    def __init__(self, device: Any = None, cuda: FakeCuda | None = None) -> None:
        self.device = torch.device(device if device is not None else "cuda")
        if self.device.type != "cuda":
            raise ValueError(f"a CUDA stream needs a CUDA device, got {device!r}")
        FakeStream._next_handle += 1
        self.cuda_stream = FakeStream._next_handle  # the raw cudaStream_t, an int
        self.waited: list[FakeStream] = []
        self.synchronized = 0

    def wait_stream(self, other: FakeStream) -> None:
        self.waited.append(other)

    def synchronize(self) -> None:
        self.synchronized += 1


def _is_cuda(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, str):
        try:
            return torch.device(value).type == "cuda"
        except RuntimeError:
            return False
    return False


def _from_torch() -> bool:
    caller = sys._getframe(2).f_globals.get("__name__", "")
    return caller == "torch" or caller.startswith("torch.")


class FakeCuda:
    """``count`` GPUs; CUDA tensors live in CPU memory. ``devices`` lists every CUDA device a
    tensor was asked to move to or be made on; ``set_devices`` the indices set."""

    def __init__(self, monkeypatch, count: int = 1, name: str = "Fake GPU") -> None:
        self.count = count
        self.name = name
        self.devices: list[str] = []
        self.set_devices: list[int] = []
        self.streams: list[FakeStream] = []
        self.current = 0
        cuda = torch.cuda
        real_available, real_count = cuda.is_available, cuda.device_count
        # PyTorch's own internals (torch.export, decompositions) keep seeing the CPU build they
        # run on; the code under test sees the GPUs.
        monkeypatch.setattr(cuda, "is_available", lambda: real_available() if _from_torch() else True)
        monkeypatch.setattr(cuda, "device_count", lambda: real_count() if _from_torch() else self.count)
        monkeypatch.setattr(cuda, "set_device", self.set_device)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "get_device_name", lambda device=None: self.name)
        monkeypatch.setattr(cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(cuda, "Stream", self.stream)
        monkeypatch.setattr(cuda, "current_stream", self.stream)
        real_to, real_empty = torch.Tensor.to, torch.empty

        def to(tensor, *args, **kwargs):
            args = tuple(self._cpu(a) for a in args)
            if "device" in kwargs:
                kwargs["device"] = self._cpu(kwargs["device"])
            return real_to(tensor, *args, **kwargs)

        def empty(*args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = self._cpu(kwargs["device"])
            return real_empty(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch, "empty", empty)

    def _cpu(self, value: Any) -> Any:
        if not _is_cuda(value):
            return value
        device = torch.device(value)
        if device.index is not None and device.index >= self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal ({device})")
        self.devices.append(str(device))
        return "cpu"

    def set_device(self, device: Any) -> None:
        index = _get_device_index(device)  # PyTorch's own check: "cuda" alone is a ValueError
        if index >= self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        if index >= 0:
            self.set_devices.append(index)
            self.current = index

    def stream(self, device: Any = None, **kwargs) -> FakeStream:
        stream = FakeStream(device if device is not None else f"cuda:{self.current}")
        if stream.device.index is not None and stream.device.index >= self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        self.streams.append(stream)
        return stream

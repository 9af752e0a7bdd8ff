"""One spelling of a device for the whole server: ``cpu`` or ``cuda:N``.

The settings normalise ``--device`` once with :func:`normalize_device`, so every backend gets
an indexed CUDA device: ``torch.cuda.set_device(torch.device("cuda"))`` raises a ValueError
(no index), which crashed the TensorRT backend on every start with ``DAT_DEVICE=cuda``.
"""

from __future__ import annotations

import torch

CHOICES = "cpu, cuda, cuda:N or auto"


def normalize_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` where PyTorch sees a GPU, else ``cpu``; ``cuda`` -> ``cuda:0``;
    ``cuda:N`` checked against the GPUs present. Raises ValueError with the reason."""
    text = str(device).strip().lower()
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be {CHOICES}, not {device!r}") from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type != "cuda":
        raise ValueError(f"device must be {CHOICES}, not {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device} requested but CUDA is not available (no NVIDIA GPU "
            "visible, or a CPU build of PyTorch)"
        )
    index = 0 if parsed.index is None else parsed.index
    count = torch.cuda.device_count()
    if index >= count:
        present = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ValueError(
            f"device {device} requested but this machine has {count} GPU"
            f"{'' if count == 1 else 's'} ({present})"
        )
    return f"cuda:{index}"

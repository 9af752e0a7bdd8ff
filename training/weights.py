"""Trained weights in and out: the safetensors file plus the JSON record of how it was made,
and a model built with its committed weights or with given ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from models import load_checkpoint, save_safetensors

M = TypeVar("M", bound=torch.nn.Module)


def write_trained(
    model: torch.nn.Module,
    out: str | Path,
    record: dict,
    log: Callable[[str], None],
    metadata: dict[str, str],
) -> None:
    """A trained demo model: its safetensors weights (with ``metadata``) and, beside them, the
    JSON record of how they were made."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, out, metadata=metadata)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")


def with_weights(build: Callable[..., M], weights: Path | None) -> M:
    """``build``'s model with its committed weights, or with ``weights`` where given."""
    model = build(pretrained=weights is None)
    if weights is not None:
        load_checkpoint(model, weights)
    return model

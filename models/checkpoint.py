"""Loading official DAT checkpoints (and safetensors files) strictly.

Accepted layouts: a bare state dict, ``{'model': ...}`` / ``{'state_dict': ...}`` wrappers
(the released ``.pth`` files carry optimizer state beside ``model``), keys prefixed with
``module.``. Pickles are read with ``weights_only=True``: no arbitrary objects are unpickled.

A checkpoint trained at another resolution or window size loads as the official
``load_pretrained`` does: ``relative_position_bias_table`` and ``rpe_table`` are resampled
bicubically; the derived buffers (``relative_position_index``, ``attn_mask``) are the model's own.
Any other difference is an error naming every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# Buffers that are pure functions of the config; the model always keeps its own values.
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_WRAPPER_KEYS = ("model", "state_dict")


class CheckpointError(ValueError):
    """The file is not a checkpoint, or does not fit the model."""


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reads a checkpoint file (or takes a mapping) and unwraps it to a flat state dict."""
    data: object  # checked below: a file may hold anything
    if isinstance(source, Mapping):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                data = load_file(str(path))
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        else:
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(
                    f"{path}: not a loadable weights-only checkpoint ({first_line})"
                ) from exc
    for key in _WRAPPER_KEYS:
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            "checkpoint holds no state dict (expected tensors, or a 'model' / 'state_dict' entry of tensors)"
        )
    return {k.removeprefix("module."): v for k, v in data.items()}


def _resample_table(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Bicubic resampling of position tables, as the official ``load_pretrained``."""
    name = key.rsplit(".", 1)[-1]
    if name == "relative_position_bias_table" and value.dim() == 2 and target.dim() == 2:
        n, heads = value.shape
        side, target_side = math.isqrt(n), math.isqrt(target.shape[0])
        if side * side != n or heads != target.shape[1]:
            return None
        grid = value.reshape(1, side, side, heads).permute(0, 3, 1, 2).float()
        out = F.interpolate(grid, (target_side, target_side), mode="bicubic")
        return out.reshape(heads, target_side**2).permute(1, 0).to(value.dtype)
    if name == "rpe_table" and value.dim() == 3 and value.shape[0] == target.shape[0]:
        out = F.interpolate(value.unsqueeze(0).float(), target.shape[1:], mode="bicubic")
        return out.squeeze(0).to(value.dtype)
    return None


def adapt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps a checkpoint onto ``model``'s keys; raises CheckpointError on any mismatch."""
    own = model.state_dict()
    derived = {k for k in own if k.rsplit(".", 1)[-1] in DERIVED_BUFFERS}
    missing = sorted(set(own) - set(state_dict) - derived)
    unexpected = sorted(set(state_dict) - set(own))
    misshaped: list[str] = []
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in own or key in derived:
            continue
        if value.shape != own[key].shape:
            resampled = _resample_table(key, value, own[key])
            if resampled is None:
                misshaped.append(f"{key} {tuple(state_dict[key].shape)} vs model {tuple(own[key].shape)}")
                continue
            value = resampled
        adapted[key] = value
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                parts.append(f"{len(keys)} {label}: {', '.join(keys)}")
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts))
    adapted.update({k: own[k] for k in derived})
    return adapted


def load_checkpoint(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Loads an official DAT checkpoint (or safetensors / state dict) into ``model``, strictly."""
    state_dict = adapt_state_dict(model, read_state_dict(source))
    model.load_state_dict(state_dict, strict=True)
    return model


def save_safetensors(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Saves the learned weights (derived buffers left out) as safetensors."""
    from safetensors.torch import save_file

    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS
    }
    save_file(tensors, str(path), metadata=metadata)

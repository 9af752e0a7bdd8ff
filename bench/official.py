"""Loads the official DAT v1 implementation from a checkout, for side-by-side measurements.

The official code is not part of this project: point ``--official`` at the ``models/`` folder
of a checkout of LeapLabTHU/DAT (commit 566a593, the v1 release). It imports ``einops`` and
three helpers from ``timm.models.layers``; the helpers are provided here so that timm (and
the torchvision it drags in) need not be installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn


def _timm_layers_stand_in() -> None:
    if "timm.models.layers" in sys.modules:
        return

    class DropPath(nn.Module):  # eval-only stand-in: identity
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()

        def forward(self, x):
            return x

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = nn.init.trunc_normal_
    timm = types.ModuleType("timm")
    timm.models = types.ModuleType("timm.models")
    timm.models.layers = layers
    sys.modules.update({"timm": timm, "timm.models": timm.models, "timm.models.layers": layers})


def load_official_dat(models_dir: str | Path) -> type[nn.Module]:
    """Returns the official ``DAT`` class from ``<checkout>/models``."""
    models_dir = Path(models_dir)
    if not (models_dir / "dat.py").is_file() or not (models_dir / "dat_blocks.py").is_file():
        raise FileNotFoundError(f"{models_dir} is not the models/ folder of an official DAT checkout")
    _timm_layers_stand_in()
    package = "official_dat_v1"
    spec = importlib.util.spec_from_file_location(
        package, models_dir / "__init__.py", submodule_search_locations=[str(models_dir)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.dat").DAT


class OfficialLogits(nn.Module):
    """Wraps the official model (which returns logits, positions, references) to return logits."""

    def __init__(self, official: nn.Module):
        super().__init__()
        self.official = official

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.official(x)[0]

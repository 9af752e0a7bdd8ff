"""The tiny DATs the tests share, taken from the registry so that they follow it.

``TINY_CONFIG`` is ``dat_digits`` (every DAT v1 block kind: L/S stages, then D stages with
offset groups and the deformable position bias) with random weights; it runs in milliseconds
and exports in seconds. ``TINY_PP_CONFIG`` is the registry's DAT-T++ shrunk to that size: N and
D blocks, LPUs, residual depth-wise MLPs, position bias everywhere, plus LayerScale (which no
released model has), at 64. Both are ``MODEL.DAT`` mappings, as a config file holds them.
"""

from __future__ import annotations

from models import get_spec

# drop path is training-only: off, so that a test's training steps are deterministic
TINY_CONFIG = get_spec("dat_digits").config.replace(drop_path_rate=0.0).to_dict()

TINY_PP_CONFIG = (
    get_spec("dat_pp_tiny")
    .config.replace(
        img_size=64,
        dim_stem=16,
        dims=(16, 32, 64, 128),
        depths=(2, 2, 2, 2),
        stage_spec=(("N", "D"), ("N", "D"), ("N", "D"), ("D", "D")),
        heads=(1, 2, 4, 8),
        groups=(1, 1, 2, 4),
        nat_ksizes=(3,) * 4,
        layer_scale_values=(0.1,) * 4,
        drop_path_rate=0.0,
    )
    .to_dict()
)

# the tiny classifier's labels in service tests
LABELS = [f"digit {i}" for i in range(10)]

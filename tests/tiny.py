"""The tiny DAT the tests share: every block kind (L/S stages, then D stages with offset groups
and the deformable position bias), dat_digits' shape with random weights; runs in milliseconds
and exports in seconds."""

TINY_CONFIG = {
    "img_size": 32,
    "patch_size": 2,
    "num_classes": 10,
    "dim_stem": 16,
    "dims": [16, 32, 64, 128],
    "depths": [2, 2, 2, 2],
    "stage_spec": [["L", "S"], ["L", "S"], ["L", "D"], ["L", "D"]],
    "heads": [1, 2, 4, 8],
    "window_sizes": [4, 4, 4, 2],
    "groups": [-1, -1, 2, 4],
    "use_pes": [False, False, True, True],
    "strides": [-1, -1, 1, 1],
    "offset_range_factor": [-1, -1, 2, 2],
}

# A DAT++ as small: N and D blocks, LPUs, residual depth-wise MLPs, position bias everywhere and
# LayerScale (which no released model has), at 64.
TINY_PP_CONFIG = {
    "img_size": 64,
    "dim_stem": 16,
    "dims": [16, 32, 64, 128],
    "depths": [2, 2, 2, 2],
    "stage_spec": [["N", "D"], ["N", "D"], ["N", "D"], ["D", "D"]],
    "heads": [1, 2, 4, 8],
    "groups": [1, 1, 2, 4],
    "use_pes": [True] * 4,
    "strides": [8, 4, 2, 1],
    "offset_range_factor": [-1] * 4,
    "use_dwc_mlps": [True] * 4,
    "use_lpus": [True] * 4,
    "use_conv_patches": True,
    "nat_ksizes": [3] * 4,
    "layer_scale_values": [0.1] * 4,
    "plus_plus": True,
}

"""mmdet's FPN neck, which the RetinaNet and R-CNN detectors share, built of convolutions in
mmcv's ConvModule key layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvModule(nn.Module):
    """A convolution, optionally followed by ReLU (mmcv's ConvModule key layout: ``.conv``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class FPN(nn.Module):
    """mmdet's FPN: laterals, top-down nearest upsampling, 3x3 output convs, then the levels
    past the inputs: stride-2 convs (``extra`` = mmdet's ``add_extra_convs``: the first reads
    the last input, lateral or output, the others the previous level) or, with ``extra=None``,
    stride-2 max pooling of the last output."""

    def __init__(
        self, in_channels: Sequence[int], out_channels: int, num_outs: int, extra: str | None = "on_input"
    ):
        super().__init__()
        if extra not in (None, "on_input", "on_lateral", "on_output"):
            raise ValueError(f"unknown FPN extra levels {extra!r}")
        self.num_outs, self.extra = num_outs, extra
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3) for _ in in_channels)
        for k in range(num_outs - len(in_channels) if extra is not None else 0):
            cin = in_channels[-1] if k == 0 and extra == "on_input" else out_channels
            self.fpn_convs.append(ConvModule(cin, out_channels, 3, stride=2))

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        first = {"on_input": inputs[-1], "on_lateral": laterals[-1]}.get(self.extra or "", outs[-1])
        for k in range(len(laterals), self.num_outs):
            if self.extra is None:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                outs.append(self.fpn_convs[k](first if k == len(laterals) else outs[-1]))
        return outs

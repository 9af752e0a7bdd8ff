"""Building blocks shared by the DAT stages: norms, MLPs, drop-path and window attention.

Inside a stage, activations are kept channels-last, (B, H, W, C): every Linear and LayerNorm
then works without permutes. Module and parameter names mirror the official release so its
checkpoints load strictly.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

# The official shifted-window mask uses -100 rather than -inf; kept for exact parity.
_MASKED = -100.0


class LayerNormProxy(nn.Module):
    """LayerNorm over channels. ``channels_last=False`` accepts (B, C, H, W)."""

    def __init__(self, dim: int, channels_last: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.norm(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class TransformerMLP(nn.Module):
    def __init__(self, dim: int, expansion: int, drop: float):
        super().__init__()
        self.chunk = nn.Sequential()
        self.chunk.add_module("linear1", nn.Linear(dim, dim * expansion))
        self.chunk.add_module("act", nn.GELU())
        self.chunk.add_module("drop1", nn.Dropout(drop))
        self.chunk.add_module("linear2", nn.Linear(dim * expansion, dim))
        self.chunk.add_module("drop2", nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.chunk(x)
        # the dropouts are identities
        first, second = cast(nn.Linear, self.chunk.linear1), cast(nn.Linear, self.chunk.linear2)
        return linear(linear(x, first.weight, first.bias, gelu=True), second.weight, second.bias)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, gelu: bool = False
) -> torch.Tensor:
    """``F.linear`` (then exact GELU with ``gelu``). On CPU one oneDNN call does both and adds
    the bias in the kernel (``F.linear`` first copies the bias into the output, and the GELU is
    another pass over the stage's largest activation): bit-identical in fp32 and without the
    GELU, within one rounding of the hidden layer in bf16 (faster for DAT-T in bf16, measured in
    interleaved pairs: docs/benchmarks.md). Autograd, traced, exported and compiled graphs keep
    the plain ops."""
    if _onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else ""
        )
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # The fused op has no backward: anything autograd would record keeps the plain ops.
    records_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return (
        not records_grad
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == x.dtype
        and x.is_contiguous()
        and _HAS_LINEAR_POINTWISE
        and _eager()
    )


def _eager() -> bool:
    """Not being traced, exported or compiled: those graphs keep the portable ops, and nothing
    made during them (fake tensors, under torch.export) may be cached for later calls."""
    return (
        not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and not torch.compiler.is_compiling()
        and torch._guards.detect_fake_mode() is None
    )


def attention_mask(bias: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """An additive float32 attention bias in the form ``scaled_dot_product_attention`` takes
    with ``q``: kept float32 by the CPU's flash kernel (which accepts it with bf16 queries: no
    rounding of the bias, and no cast of a D block's largest tensor; the saving is in
    docs/benchmarks.md), cast to ``q``'s dtype for every other kernel and for exported graphs,
    which want one dtype."""
    if q.device.type == "cpu" and _eager():
        return bias
    return bias.to(q.dtype)


_HAS_LINEAR_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_linear_pointwise"
)
_HAS_CONV_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise"
)


def plus_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``x + conv(x)`` for channels-last x (B, H, W, C) and a stride-1, same-size conv (DAT++'s
    local perception units). On CPU, for a depth-wise conv, the identity is folded into the
    kernel's centre tap: one plain convolution over the channels-last view, which oneDNN runs
    faster than both the separate add and its own fused add. Exact in fp32 up to one rounding
    of the tap; in bf16 the tap is rounded once, as the sum would be."""
    nchw = x.permute(0, 3, 1, 2)  # a view with channels-last strides, as oneDNN wants
    if _onednn(x, conv.weight) and conv.groups == conv.in_channels == conv.out_channels:
        return F.conv2d(
            nchw, _centre_plus_one(conv), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
        ).permute(0, 2, 3, 1)
    return x + conv(nchw).permute(0, 2, 3, 1)


def _centre_plus_one(conv: nn.Conv2d) -> torch.Tensor:
    """A depth-wise conv's weight with 1 added at the centre tap: ``conv(x) + x`` as one conv."""
    weight = conv.weight.clone()
    weight[:, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] += 1
    return weight


def gelu_plus_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``GELU(x + conv(x))`` for channels-last x and a depth-wise, stride-1, same-size conv (the
    DAT++ MLP's middle). On CPU one oneDNN call: the identity folded into the kernel's centre
    tap, the exact GELU fused after it, which saves two passes over the MLP's widest tensor.
    Within 1e-7 relative in fp32; in bf16 the folded tap is rounded once, which moved the
    dat_pp_mini logits no further from fp32 than the unfused bf16 path does."""
    nchw = x.permute(0, 3, 1, 2)
    if _onednn(x, conv.weight) and _HAS_CONV_POINTWISE and conv.groups == conv.in_channels:
        out = torch.ops.mkldnn._convolution_pointwise(
            nchw,
            _centre_plus_one(conv),
            conv.bias,
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            "gelu",
            [],
            "none",
        )
        return out.permute(0, 2, 3, 1)
    return F.gelu(x + conv(nchw).permute(0, 2, 3, 1))


class TransformerMLPWithConv(nn.Module):
    """The ``use_dwc_mlps`` variant: 1x1 conv, depthwise 3x3, GELU, 1x1 conv. DAT v1 applies
    the depthwise conv in series; DAT++ (``residual``) adds it to its input, and keeps each
    1x1 conv in a Sequential (``linear1.0.weight``), as the official codes do."""

    def __init__(self, dim: int, expansion: int, drop: float, residual: bool = False):
        super().__init__()
        hidden = dim * expansion
        self.residual = residual
        first, second = nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, dim, 1)
        self.linear1 = nn.Sequential(first) if residual else first
        self.drop1 = nn.Dropout(drop)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(second) if residual else second
        self.drop2 = nn.Dropout(drop)
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    @property
    def _first(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.linear1[0] if isinstance(self.linear1, nn.Sequential) else self.linear1)

    @property
    def _second(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.linear2[0] if isinstance(self.linear2, nn.Sequential) else self.linear2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        if not self.residual:
            x = x.permute(0, 3, 1, 2)
            x = self.drop1(self.act(self.dwc(self._first(x))))
            return self.drop2(self._second(x)).permute(0, 2, 3, 1)
        # Channels-last throughout: the 1x1 convs as Linears, the depthwise conv on an NCHW
        # view with channels-last strides (no copies either way).
        h = self.drop1(linear(x, self._first.weight.flatten(1), self._first.bias))
        h = gelu_plus_conv(self.dwc, h)  # self.act is this exact GELU
        return self.drop2(linear(h, self._second.weight.flatten(1), self._second.bias))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (DAT++ ``layer_scale_values``). The classifier
    names its parameter ``weight``, the detection backbone ``gamma``."""

    def __init__(self, dim: int, init_value: float, name: str = "weight"):
        super().__init__()
        self.name = name
        self.register_parameter(name, nn.Parameter(torch.full((dim,), float(init_value))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, self.name)


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's (w*w, w*w) index into the (2w-1)^2 bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative = relative + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]


def shifted_window_mask(fmap: int, window: int, shift: int, width: int | None = None) -> torch.Tensor:
    """(num_windows, w*w, w*w) additive mask keeping attention inside each shifted region of a
    fmap x fmap map (fmap x width where given), windows in row-major order."""
    width = fmap if width is None else width
    regions = torch.zeros(fmap, width)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (h, w) in enumerate((h, w) for h in bounds for w in bounds):
        regions[h, w] = label
    windows = regions.view(fmap // window, window, width // window, window)
    windows = windows.permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, _MASKED)


def pad_to_window(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) zero-padded at the bottom and right to multiples of ``window``, as the DAT
    detection backbone pads (the zeros take part in attention, unmasked); ``x`` itself when
    it already fits, so that a classifier's graph gains no op."""
    pad_h, pad_w = -x.shape[1] % window, -x.shape[2] % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def _crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left height x width of a (B, H, W, C) map; ``x`` itself when it is that size."""
    if x.shape[1] == height and x.shape[2] == width:
        return x
    return x[:, :height, :width]


class LocalAttention(nn.Module):
    """``L`` block: multi-head self-attention inside non-overlapping windows."""

    relative_position_index: torch.Tensor  # a buffer

    def __init__(self, dim: int, heads: int, window: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads = heads
        self.window = window
        self.scale = (dim // heads) ** -0.5
        self.attn_drop = attn_drop
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        self.register_buffer("relative_position_index", relative_position_index(window))

    def attention_bias(self) -> torch.Tensor:
        """(heads, w*w, w*w) relative position bias, contiguous: as a permuted view it made
        the S blocks' sum with their window masks several times slower on CPU (docs/benchmarks.md)."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.heads).permute(2, 0, 1).contiguous()

    def window_attention(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C); bias (1 or windows, heads, w*w, w*w)."""
        B, H, W, C = x.shape
        w, heads = self.window, self.heads
        rows, cols = H // w, W // w
        windows = x.reshape(B, rows, w, cols, w, C).transpose(2, 3).reshape(B, rows * cols, w * w, C)
        qkv = linear(windows, self.proj_qkv.weight, self.proj_qkv.bias).view(
            B * rows * cols, w * w, 3, heads, C // heads
        )
        # strided views, no copies: 3 x (B * windows, heads, w*w, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if bias.shape[0] > 1:  # one mask per window: repeat it for every image
            bias = bias.expand(B, -1, -1, -1, -1).reshape(B * rows * cols, heads, w * w, w * w)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            scale=self.scale,
            dropout_p=self.attn_drop if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(B, rows * cols, w * w, C)
        out = self.proj_drop(linear(out, self.proj_out.weight, self.proj_out.bias))
        return out.view(B, rows, cols, w, w, C).transpose(2, 3).reshape(B, H, W, C)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        H, W = x.shape[1], x.shape[2]
        out = self.window_attention(pad_to_window(x, self.window), self.attention_bias().unsqueeze(0))
        return _crop(out, H, W), None, None


class ShiftWindowAttention(LocalAttention):
    """``S`` block: window attention on a feature map rolled by ceil(w / 2)."""

    attn_mask: torch.Tensor  # a buffer

    def __init__(self, dim: int, heads: int, window: int, attn_drop: float, proj_drop: float, fmap: int):
        super().__init__(dim, heads, window, attn_drop, proj_drop)
        self.shift = math.ceil(window / 2)
        if not 0 < self.shift < window:
            raise ValueError(f"window size {window} is too small to shift")
        self.fmap = fmap
        self.register_buffer("attn_mask", shifted_window_mask(fmap, window, self.shift))
        # Masks of other (padded) map sizes, built on first use: the detection backbone's inputs.
        self._other_masks: dict[tuple, torch.Tensor] = {}

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._other_masks = {}
        return self

    def mask(self, height: int, width: int) -> torch.Tensor:
        """The shifted-window mask of a height x width map (multiples of the window)."""
        if height == width == self.fmap:
            return self.attn_mask
        key = (height, width)  # _apply empties the cache on a move or cast
        if key not in self._other_masks:
            with torch.inference_mode(False):  # a plain tensor: autograd may save it later
                mask = shifted_window_mask(height, self.window, self.shift, width)
                self._other_masks[key] = mask.to(self.attn_mask.device, self.attn_mask.dtype)
        return self._other_masks[key]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # Padded before the roll and masked at the padded size, as the DAT detection backbone.
        H, W = x.shape[1], x.shape[2]
        x = pad_to_window(x, self.window)
        bias = self.attention_bias().unsqueeze(0) + self.mask(x.shape[1], x.shape[2]).unsqueeze(1)
        shifted = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        out = self.window_attention(shifted, bias)
        out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return _crop(out, H, W), None, None

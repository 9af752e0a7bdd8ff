"""The trace-time op policy, a ``TorchFunctionMode`` active while a model is traced for export.

:class:`ExportPolicy` writes attention out as ``softmax((q * scale) @ k^T + bias) @ v`` (the ONNX
exporter's handling of ``scaled_dot_product_attention`` breaks a dynamic batch axis; the explicit
form exports to plain MatMul/Softmax that every runtime fuses) and, for half-precision graphs,
keeps the softmax and every LayerNorm in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ExportPolicy(torch.overrides.TorchFunctionMode):
    """Rewrites attention for export and keeps precision-critical ops in float32.

    Always: ``scaled_dot_product_attention`` becomes ``softmax((q * scale) @ k^T + mask) @ v``
    (inference only: no dropout, no causal masking; the model uses neither).
    With ``fp32_islands`` (half-precision graphs): the attention softmax, the bias addition and
    every ``layer_norm`` run in float32 and cast back, so the graph carries explicit Casts that
    a strongly typed TensorRT network honours.
    """

    def __init__(self, fp32_islands: bool = False):
        super().__init__()
        self.fp32_islands = fp32_islands

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if func is F.layer_norm and self.fp32_islands:
            return self._layer_norm(*args, **kwargs)
        return func(*args, **kwargs)

    def _attention(
        self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
    ):
        if is_causal or enable_gqa:
            raise NotImplementedError("export supports non-causal attention without GQA only")
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        if self.fp32_islands:
            scores = scores.float()
        if attn_mask is not None:
            scores = scores + attn_mask.to(scores.dtype)
        return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)

    def _layer_norm(self, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        if x.dtype == torch.float32:
            return F.layer_norm(x, normalized_shape, weight, bias, eps)
        weight = None if weight is None else weight.float()
        bias = None if bias is None else bias.float()
        return F.layer_norm(x.float(), normalized_shape, weight, bias, eps).to(x.dtype)

"""What both training loops share: AdamW without weight decay on biases, norms and position
tables, and a learning rate that warms up linearly, then decays along a cosine."""

from __future__ import annotations

import math

import torch


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW decaying the weights of more than one dimension except the ``rpe_table``s."""
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "rpe_table" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "rpe_table" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor of step ``step`` (from 1) of ``total``: linear up to 1 over
    ``warmup`` steps, then a cosine down to 0 at ``total``."""
    if step <= warmup:
        return step / max(warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

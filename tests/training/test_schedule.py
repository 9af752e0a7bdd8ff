"""What both training loops share: the optimizer's parameter groups and the learning-rate factor."""

from __future__ import annotations

import math

import pytest
import torch

from training.schedule import adamw, warmup_cosine


def test_warmup_then_cosine():
    assert [warmup_cosine(step, 4, 20) for step in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)  # half-way through the decay
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(5, 4, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi / 16)))
    assert warmup_cosine(1, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))  # no warm-up


def test_no_weight_decay_on_biases_norms_and_position_tables():
    model = torch.nn.Module()
    model.proj = torch.nn.Linear(3, 4)
    model.norm = torch.nn.LayerNorm(4)
    model.rpe_table = torch.nn.Parameter(torch.zeros(2, 5, 5))
    decay, no_decay = adamw(model, lr=1e-3, weight_decay=0.05).param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [(4, 3)]
    assert {tuple(p.shape) for p in no_decay["params"]} == {(4,), (2, 5, 5)}
    assert decay["lr"] == no_decay["lr"] == 1e-3

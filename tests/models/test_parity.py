"""The model computes what the official DAT v1 computes, and builds its exact parameter layout."""

from __future__ import annotations

import pytest
import torch

from models import create_model, get_spec, load_checkpoint

TOL = 1e-4


@pytest.fixture(scope="module")
def mini_model(mini_fixture):
    model = create_model(mini_fixture["config"])
    load_checkpoint(model, mini_fixture["checkpoint"])
    return model


def test_reproduces_official_logits(mini_model, mini_fixture):
    expected = mini_fixture["expected"]
    with torch.inference_mode():
        logits = mini_model(expected["input"])
    assert logits.shape == expected["logits"].shape
    assert (logits - expected["logits"]).abs().max().item() < TOL


def test_reproduces_official_deformed_points(mini_model, mini_fixture):
    expected = mini_fixture["expected"]
    with torch.inference_mode():
        logits, positions, references = mini_model.forward_with_points(expected["input"])
    assert (logits - expected["logits"]).abs().max().item() < TOL
    d_blocks = 0
    for got_stage, want_stage, got_refs, want_refs in zip(
        positions, expected["positions"], references, expected["references"], strict=True
    ):
        assert len(got_stage) == len(want_stage)
        for got, want, got_ref, want_ref in zip(got_stage, want_stage, got_refs, want_refs):
            if want is None:
                assert got is None and got_ref is None
                continue
            d_blocks += 1
            assert got.shape == want.shape and got.dtype == torch.float32
            assert (got - want).abs().max().item() < TOL
            assert (got_ref - want_ref).abs().max().item() < TOL
    assert d_blocks == 2


@pytest.mark.parametrize("name", ["dat_tiny", "dat_small", "dat_base", "dat_base_384"])
def test_official_configs_build_the_released_state_dict_layout(name, official_shapes):
    model = create_model(name)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = official_shapes[name]["state_dict"]
    assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}


def test_registered_configs_equal_the_official_yaml_values(official_shapes):
    for name, entry in official_shapes.items():
        ours = get_spec(name).config.to_dict()
        assert {key: ours[key] for key in entry["config"]} == entry["config"], name

"""DAT++ computes what the official DAT++ code computes on NATTEN's kernels, and builds the
released checkpoints' exact parameter layout."""

from __future__ import annotations

import copy

import pytest
import torch

from models import DATConfig, create_model, get_spec, load_checkpoint
from models.deformable import DeformableAttention, query_points, reference_points

TOL = 1e-4
PP_MODELS = ["dat_pp_tiny", "dat_pp_small", "dat_pp_base", "dat_pp_base_384"]


@pytest.fixture(scope="module")
def pp_model(pp_fixture):
    model = create_model(pp_fixture["config"])
    load_checkpoint(model, pp_fixture["checkpoint"])
    return model


def test_official_yaml_selects_dat_plus_plus(pp_fixture):
    config = DATConfig.from_yaml(pp_fixture["config"])
    assert config.plus_plus and config.nat_ksizes == (7, 7, 7, 7)


def test_reproduces_official_logits(pp_model, pp_fixture):
    expected = pp_fixture["expected"]
    with torch.inference_mode():
        logits = pp_model(expected["input"])
    assert logits.shape == expected["logits"].shape
    assert (logits - expected["logits"]).abs().max().item() < TOL


def test_the_logits_are_sensitive_to_v1_reference_points(pp_model, pp_fixture):
    """The same weights with v1's reference points, query grid and offset range miss the
    reference by far more than the tolerance: the fixture tells the generations apart."""
    model = copy.deepcopy(pp_model)
    for block in model.modules():
        if isinstance(block, DeformableAttention):
            n, fmap = block.sample_size, block.fmap
            block.reference = reference_points(n, n, plus_plus=False)
            block.query_grid = query_points(fmap, fmap, plus_plus=False)
            block.offset_range = torch.tensor([1.0 / n, 1.0 / n])
    with torch.inference_mode():
        logits = model(pp_fixture["expected"]["input"])
    assert (logits - pp_fixture["expected"]["logits"]).abs().max().item() > 10 * TOL


def test_reproduces_official_points(pp_model, pp_fixture):
    """Every D block's sampling points lie in [-1, 1] (DAT++ clamps them) and its reference
    points are DAT++'s: centres divided by n - 1."""
    with torch.inference_mode():
        _, positions, references = pp_model.forward_with_points(pp_fixture["expected"]["input"])
    blocks = [
        (p, r)
        for stage_p, stage_r in zip(positions, references)
        for p, r in zip(stage_p, stage_r)
        if p is not None
    ]
    assert len(blocks) == 5
    for pos, ref in blocks:
        assert pos.abs().max() <= 1.0
        n = ref.shape[2]
        assert ref[0, 0, 0, 0, 0].item() == pytest.approx(0.5 / (n - 1) * 2 - 1)


@pytest.mark.parametrize("name", PP_MODELS)
def test_official_configs_build_the_released_state_dict_layout(name, official_pp_shapes):
    model = create_model(name)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = official_pp_shapes[name]["state_dict"]
    assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}


def test_registered_configs_equal_the_official_yaml_values(official_pp_shapes):
    for name, entry in official_pp_shapes.items():
        ours = get_spec(name).config.to_dict()
        # drop_path_rate is training-only; the shapes file was written with it at 0.
        keys = set(entry["config"]) - {"drop_path_rate"}
        assert {key: ours[key] for key in keys} == {key: entry["config"][key] for key in keys}, name
        assert ours["plus_plus"]


def test_the_384_model_runs_at_384_with_tables_built_at_224():
    model = create_model("dat_pp_base_384", pretrained=False)
    assert model.config.img_size == 224 and model.input_size == 384
    preprocessing = model.info.preprocessing
    assert preprocessing.crop_pct == 1.0 and preprocessing.resize_size == 384


def test_a_released_checkpoint_layout_loads_strictly_and_a_wrong_one_does_not(official_pp_shapes):
    model = create_model("dat_pp_tiny", pretrained=False)
    released = {k: torch.zeros(shape) for k, shape in official_pp_shapes["dat_pp_tiny"]["state_dict"].items()}
    load_checkpoint(model, {"model": released})
    assert model.stages[0].attns[0].rpb.abs().sum() == 0
    del released["stages.0.attns.0.rpb"]
    with pytest.raises(ValueError, match="1 missing: stages.0.attns.0.rpb"):
        load_checkpoint(model, released)


def test_a_bare_mapping_with_dat_plus_plus_keys_is_dat_plus_plus(official_pp_shapes):
    mapping = dict(official_pp_shapes["dat_pp_tiny"]["config"])
    assert DATConfig.from_mapping(mapping).plus_plus
    v1 = create_model("dat_tiny", pretrained=False).config.to_dict()
    del v1["plus_plus"]
    assert not DATConfig.from_mapping(
        {k: v1[k] for k in ("dims", "depths", "stage_spec", "heads", "groups")}
    ).plus_plus
    assert DATConfig.from_mapping({"ksizes": [9, 7, 5, 3]}, plus_plus=False).plus_plus is False


def test_training_only_and_unused_block_options_are_accepted():
    config = DATConfig.from_mapping(
        {
            "lower_lr_kvs": {},
            "use_checkpoint": True,
            "heads_q": [1] * 4,
            "qna_activation": "exp",
            "drop_path_rate": 0.3,
        }
    )
    assert config.plus_plus and config.drop_path_rate == 0.3
    with pytest.raises(ValueError, match="use_cmt_mlps"):
        DATConfig.from_mapping({"use_cmt_mlps": [True] * 4, "use_dwc_mlps": [True] * 4})


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, TOL), (torch.float16, 3e-2)])
def test_reproduces_official_logits_on_cuda(pp_model, pp_fixture, dtype, tolerance):
    model = copy.deepcopy(pp_model).to("cuda", dtype)
    with torch.inference_mode():
        logits = model(pp_fixture["expected"]["input"].to("cuda", dtype)).float().cpu()
    assert (logits - pp_fixture["expected"]["logits"]).abs().max().item() < tolerance


def test_another_resolution_resamples_the_position_tables(official_pp_shapes):
    """As for v1 (the official load_pretrained): a 224 checkpoint into a model built at 384
    gets its D blocks' rpe tables resampled bicubically; the N blocks' rpb do not depend on size."""
    released = {k: torch.randn(shape) for k, shape in official_pp_shapes["dat_pp_tiny"]["state_dict"].items()}
    model = create_model("dat_pp_tiny", pretrained=False, img_size=384)
    load_checkpoint(model, released)
    table = model.stages[0].attns[1].rpe_table
    assert table.shape == (2, 191, 191)  # 2 * 96 - 1
    want = torch.nn.functional.interpolate(
        released["stages.0.attns.1.rpe_table"][None], (191, 191), mode="bicubic"
    )[0]  # the official load_pretrained
    assert torch.equal(table.detach(), want)
    assert torch.equal(model.stages[0].attns[0].rpb, released["stages.0.attns.0.rpb"])
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 384, 384)).shape == (1, 1000)

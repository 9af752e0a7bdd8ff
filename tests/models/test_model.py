"""Model behaviour beyond parity: batching, determinism, features, configs, seams."""

from __future__ import annotations

import pytest
import torch
import yaml

from models import DATConfig, create_model, list_models, sampling
from models.labels import imagenet_labels


def test_each_image_is_independent_of_its_batch_and_deterministic(tiny_model):
    torch.manual_seed(1)
    images = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        batched = tiny_model(images)
        again = tiny_model(images)
        alone = torch.cat([tiny_model(images[i : i + 1]) for i in range(5)])
        reordered = tiny_model(images.flip(0)).flip(0)
    assert torch.equal(batched, again)
    assert (batched - alone).abs().max().item() < 1e-5
    assert (batched - reordered).abs().max().item() < 1e-5


def test_forward_features_gives_the_four_stage_maps(tiny_model):
    with torch.inference_mode():
        features = tiny_model.forward_features(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [
        (2, 16, 16, 16),
        (2, 32, 8, 8),
        (2, 64, 4, 4),
        (2, 128, 2, 2),
    ]


def test_points_follow_the_official_layout(tiny_model):
    with torch.inference_mode():
        logits, positions, references = tiny_model.forward_with_points(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10)
    assert [[p is None for p in stage] for stage in positions] == [
        [True, True],
        [True, True],
        [True, False],
        [True, False],
    ]
    assert positions[2][1].shape == (3, 2, 4, 4, 2) and positions[3][1].shape == (3, 4, 2, 2, 2)
    assert references[3][1].shape == (3, 4, 2, 2, 2)
    # offset_range_factor 2 bounds each offset by 2 / Hk around its reference point
    assert (positions[2][1] - references[2][1]).abs().max().item() <= 2 / 4 + 1e-6


def test_wrong_input_shape_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        tiny_model(torch.randn(1, 3, 64, 64))


def test_official_yaml_file_is_accepted(tmp_path):
    official = {
        "MODEL": {"TYPE": "dat", "NAME": "dat_tiny", "DAT": create_model("dat_tiny").config.to_dict()},
        "TRAIN": {"EPOCHS": 300},
    }
    path = tmp_path / "dat_tiny.yaml"
    path.write_text(yaml.safe_dump(official))
    model = create_model(path)
    assert model.config == create_model("dat_tiny").config
    assert model.info.name == "dat_tiny" and len(model.info.labels) == 1000


@pytest.mark.parametrize(
    "change, message",
    [
        ({"img_size": 100}, "divisible by patch_size"),
        ({"window_sizes": (5, 7, 7, 7)}, "not divisible by window size"),
        ({"groups": (-1, -1, 5, 6)}, "offset groups"),
        ({"stage_spec": (("L", "S"), ("L", "S"), ("L", "D") * 3, ("L", "Z"))}, "unknown block kind"),
        ({"stage_spec": (("L", "S"), ("L", "S"), ("L", "D") * 3, ("L", "X"))}, "'X' blocks .* not support"),
        ({"stage_spec": (("N", "S"), ("L", "S"), ("L", "D") * 3, ("L", "D"))}, "only DAT\\+\\+ has"),
        ({"use_lpus": (True, False, False, False)}, "DAT\\+\\+ options"),
        ({"depths": (2, 2, 6, 3)}, "depth"),
    ],
)
def test_invalid_configs_are_rejected_with_a_reason(change, message):
    with pytest.raises(ValueError, match=message):
        DATConfig().replace(**change)


def test_unknown_names_and_keys_are_clear_errors():
    with pytest.raises(KeyError, match="unknown model 'dat_huge'.*dat_tiny"):
        create_model("dat_huge")
    with pytest.raises(ValueError, match="unknown keys.*'depth'"):
        create_model({"depth": [2, 2, 2, 2]})
    assert {"dat_tiny", "dat_small", "dat_base", "dat_base_384"} <= set(list_models())


def test_imagenet_labels_are_in_sorted_wordnet_order():
    from models.labels import LABELS_DIR

    lines = (LABELS_DIR / "imagenet1k.txt").read_text().splitlines()
    wnids = [line.split("\t")[0] for line in lines]
    assert len(wnids) == 1000 == len(set(wnids)) and wnids == sorted(wnids)
    labels = imagenet_labels()
    assert labels[0] == "tench" and labels[1] == "goldfish" and labels[999] == "toilet tissue"


def test_sampling_seams_can_be_replaced_and_restored(tiny_model):
    calls = []

    def spy(name):
        def sample(source, grid):
            calls.append(name)
            return sampling.bilinear_grid_sample(source, grid)

        return sample

    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        reference = tiny_model(x)
        with sampling.override(deformable_kv=spy("kv"), bias_interpolation=spy("bias")):
            replaced = tiny_model(x)
        assert calls == ["kv", "bias", "kv", "bias"]  # one D block in each of stages 3 and 4
        assert torch.equal(reference, replaced)
        tiny_model(x)
    assert len(calls) == 4
    with pytest.raises(KeyError, match="unknown sampling seam"):
        with sampling.override(nearest=spy("x")):
            pass


@pytest.mark.parametrize("batch", [1, 3])
def test_half_precision_keeps_sampling_in_float32(tiny_model, batch):
    x = torch.randn(batch, 3, 32, 32)
    with torch.inference_mode():
        reference, ref_positions, _ = tiny_model.forward_with_points(x)
        model = tiny_model.to(torch.bfloat16)
        logits, positions, _ = model.forward_with_points(x.to(torch.bfloat16))
    assert positions[2][1].dtype == torch.float32 and torch.isfinite(logits).all()
    assert (positions[2][1] - ref_positions[2][1]).abs().max().item() < 0.02
    # bf16 keeps ~3 significant digits: logits of magnitude ~0.4 move by ~4e-3 here
    assert (logits.float() - reference).abs().max().item() < 0.03


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # torch deprecates it; what it sees is checked
def test_cpu_linears_run_as_one_onednn_call_without_changing_the_answer(dtype, monkeypatch):
    from models import layers

    if not layers._HAS_LINEAR_POINTWISE:
        pytest.skip("this torch build has no oneDNN linear fusion")
    torch.manual_seed(0)
    mlp = layers.TransformerMLP(32, 4, 0.0).eval().to(dtype)
    x = torch.randn(2, 5, 7, 32).to(dtype)
    calls = []
    fused = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(
        layers.torch.ops.mkldnn,
        "_linear_pointwise",
        lambda *args: calls.append(args[3]) or fused(*args),
        raising=False,
    )
    with torch.inference_mode():
        got, want = mlp(x), mlp.chunk(x)
    assert calls == ["gelu", "none"]
    tolerance = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: one rounding of the hidden layer
    assert (got.float() - want.float()).abs().max() <= tolerance
    with torch.inference_mode():
        mlp.train()
        mlp(x)
        traced = torch.jit.trace(mlp.eval(), x, check_trace=False)
    assert calls == ["gelu", "none"]  # training and tracing run the plain modules
    assert "mkldnn" not in str(traced.graph) and "gelu" in str(traced.graph)
    mlp(x.requires_grad_()).float().sum().backward()  # eval mode with autograd: plain ops too
    assert calls == ["gelu", "none"] and mlp.chunk.linear1.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_depthwise_convs_with_the_identity_folded_in_give_the_plain_answer(dtype):
    """DAT++'s local perception units (x + conv(x)) and MLP middle (GELU(x + conv(x))) fold
    the identity into the conv's centre tap on CPU; the answer is the plain ops'."""
    from models import layers

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16).eval().to(dtype)
    x = torch.randn(2, 6, 5, 16).to(dtype)  # channels-last (B, H, W, C)
    with torch.inference_mode():
        reference = torch.nn.functional.conv2d(
            x.float().permute(0, 3, 1, 2), conv.weight.float(), conv.bias.float(), padding=1, groups=16
        )
        plain = x.float() + reference.permute(0, 2, 3, 1)
        folded, gelu_folded = layers.plus_conv(conv, x), layers.gelu_plus_conv(conv, x)
    tolerance = 1e-6 if dtype == torch.float32 else 3e-2  # bf16: the tap or the sum rounded once
    assert (folded.float() - plain).abs().max() <= tolerance
    assert (gelu_folded.float() - torch.nn.functional.gelu(plain)).abs().max() <= tolerance
    assert folded.is_contiguous() and gelu_folded.is_contiguous()  # channels-last out, no copy
    assert not torch.equal(conv.weight, layers._centre_plus_one(conv))  # the weight is untouched

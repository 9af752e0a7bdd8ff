"""Loading official checkpoints strictly, in every wrapper, and at another resolution."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from models import CheckpointError, create_model, load_checkpoint, read_state_dict, save_safetensors
from models.checkpoint import DERIVED_BUFFERS


@pytest.fixture(scope="module")
def official_state(mini_fixture):
    return read_state_dict(mini_fixture["checkpoint"])


def _logits(model, x):
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "module_prefix"])
def test_every_checkpoint_layout_loads_to_the_same_weights(wrap, official_state, mini_fixture, tmp_path):
    state = official_state
    if wrap == "module_prefix":
        payload = {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    elif wrap == "bare":
        payload = state
    else:
        payload = {wrap: state, "optimizer": {"state": {}}, "max_accuracy": 0.5}
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    model = load_checkpoint(create_model(mini_fixture["config"]), path)
    expected = mini_fixture["expected"]
    assert (_logits(model, expected["input"]) - expected["logits"]).abs().max() < 1e-4


def test_safetensors_round_trip(mini_fixture, tmp_path):
    model = load_checkpoint(create_model(mini_fixture["config"]), mini_fixture["checkpoint"])
    path = tmp_path / "mini.safetensors"
    save_safetensors(model, path, metadata={"source": "test"})
    reloaded = load_checkpoint(create_model(mini_fixture["config"]), path)
    x = mini_fixture["expected"]["input"]
    assert torch.equal(_logits(model, x), _logits(reloaded, x))


def test_mismatch_names_missing_unexpected_and_misshaped_keys(official_state, mini_fixture):
    state = dict(official_state)
    del state["cls_head.bias"]
    state["stages.0.bogus.weight"] = torch.zeros(1)
    state["cls_head.weight"] = torch.zeros(7, 256)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model(mini_fixture["config"]), state)
    message = str(err.value)
    assert "1 missing: cls_head.bias" in message
    assert "1 unexpected: stages.0.bogus.weight" in message
    assert "1 mis-shaped: cls_head.weight (7, 256) vs model (10, 256)" in message


def test_a_checkpoint_for_another_model_is_refused(mini_fixture):
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(create_model("dat_tiny"), mini_fixture["checkpoint"])


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, about the pickle made here
def test_arbitrary_pickles_are_never_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        read_state_dict(path)
    assert "unpickled" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message", [(b"", "not a loadable"), (b"\x00garbage" * 10, "not a loadable")]
)
def test_garbage_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "absent.pth")
    torch.save({"model": {"a": 1}}, path)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(path)


def test_a_checkpoint_serves_at_another_resolution_and_window(official_state, mini_fixture):
    """As the official load_pretrained: tables resampled bicubically, derived buffers rebuilt."""
    config = dict(mini_fixture["config"], img_size=384, window_sizes=[12, 12, 12, 12])
    model = load_checkpoint(create_model(config), official_state)
    state = model.state_dict()
    table = official_state["stages.2.attns.1.rpe_table"]  # (heads, 27, 27) at 224
    assert state["stages.2.attns.1.rpe_table"].shape == (4, 47, 47)
    want = F.interpolate(table.unsqueeze(0), (47, 47), mode="bicubic").squeeze(0)
    assert torch.equal(state["stages.2.attns.1.rpe_table"], want)
    bias = official_state["stages.0.attns.0.relative_position_bias_table"]  # (169, heads)
    want = F.interpolate(bias.reshape(1, 13, 13, -1).permute(0, 3, 1, 2), (23, 23), mode="bicubic")
    assert torch.equal(
        state["stages.0.attns.0.relative_position_bias_table"], want.reshape(-1, 23 * 23).permute(1, 0)
    )
    assert state["stages.0.attns.1.attn_mask"].shape == (64, 144, 144)
    # Weights that do not depend on the resolution are loaded unchanged.
    assert torch.equal(
        state["stages.2.attns.1.proj_q.weight"], official_state["stages.2.attns.1.proj_q.weight"]
    )
    logits = _logits(model, torch.randn(1, 3, 384, 384))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_derived_buffers_are_rebuilt_not_trusted(official_state, mini_fixture):
    state = {k: v for k, v in official_state.items() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS}
    model = load_checkpoint(create_model(mini_fixture["config"]), state)
    expected = mini_fixture["expected"]
    assert (_logits(model, expected["input"]) - expected["logits"]).abs().max() < 1e-4

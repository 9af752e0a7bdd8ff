"""mmdet 2.x config files read as data: literal values, names, arithmetic and dict() calls
evaluated, anything else refused without running it; _base_ chains merged as mmcv merges
them; the test pipeline's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.mmdet_config import ConfigError, pipeline_settings, read_mmdet_config
from tests.helpers.paths import FIXTURES


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_values_are_evaluated_as_data(tmp_path):
    path = write(
        tmp_path,
        "c.py",
        '''"""a docstring"""
data_root = 'data/coco/'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
norm = dict(type='Normalize', **img_norm_cfg)
both = {**img_norm_cfg, 'size': (1333, 800)}
ann = data_root + 'annotations/x.json'
beta = 1.0 / 9.0
scales = [(480 + 32 * i, 1333) for i in range(2)] if False else [(480, 1333)] * 2
neg, flag, nothing = -1, not True, None
''',
    )
    with pytest.raises(ConfigError, match="line 8: this IfExp"):  # a conditional is code
        read_mmdet_config(path)
    path.write_text(
        path.read_text()
        .replace(
            "scales = [(480 + 32 * i, 1333) for i in range(2)] if False else [(480, 1333)] * 2\n",
            "scales = [(480, 1333)] * 2\n",
        )
        .replace("neg, flag, nothing = -1, not True, None\n", "neg = -1\nflag = not True\nnothing = None\n")
    )
    config = read_mmdet_config(path)
    assert config["norm"] == {
        "type": "Normalize",
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "to_rgb": True,
    }
    assert config["both"]["size"] == (1333, 800) and config["ann"] == "data/coco/annotations/x.json"
    assert config["beta"] == pytest.approx(1 / 9) and config["scales"] == [(480, 1333), (480, 1333)]
    assert (config["neg"], config["flag"], config["nothing"]) == (-1, False, None)
    config["norm"]["mean"].append(0)  # names are copied, not aliased
    assert len(config["img_norm_cfg"]["mean"]) == 3


@pytest.mark.parametrize(
    "line,what",
    [
        ("import os", "Import"),
        ("x = __import__('os').system('true')", "Call"),
        ("x = open('/etc/passwd').read()", "Call"),
        ("x = dict(a=1).update", "Attribute"),
        ("x = (lambda: 1)()", "Call"),
        ("x = y", "'y'"),
        ("x = {{_base_.model}}", "Set"),
        ("def f():\n    pass", "FunctionDef"),
        ("x: int = 1", "AnnAssign"),
        ("x = 'a' * dict()", "arithmetic"),
    ],
)
def test_code_is_refused_not_run(tmp_path, line, what):
    marker = tmp_path / "ran"
    path = write(
        tmp_path, "c.py", f"model = dict(type='MaskRCNN')\n{line}\nopen({str(marker)!r}, 'w').close()\n"
    )
    with pytest.raises(ConfigError, match=what) as info:
        read_mmdet_config(path)
    assert "line 2" in str(info.value) and "never executed" in str(info.value)
    assert not marker.exists()


def test_base_chain_merges_as_mmcv(tmp_path):
    write(
        tmp_path,
        "_base_/models/m.py",
        "model = dict(type='MaskRCNN', backbone=dict(type='DAT', dims=[1, 2], "
        "depths=[2, 2]), neck=dict(type='FPN', num_outs=5))\n",
    )
    write(
        tmp_path, "_base_/data.py", "data_root = 'data/'\ntest_pipeline = [dict(type='LoadImageFromFile')]\n"
    )
    write(tmp_path, "_base_/opt.py", "optimizer = dict(type='SGD', lr=0.02, momentum=0.9)\n")
    path = write(
        tmp_path,
        "dat/child.py",
        """_base_ = ['../_base_/models/m.py', '../_base_/data.py', '../_base_/opt.py']
model = dict(backbone=dict(dims=[3, 4]), neck=dict(in_channels=[3, 4]))
optimizer = dict(_delete_=True, type='AdamW', lr=1e-4)
data_root = 'elsewhere/'
""",
    )
    config = read_mmdet_config(path)
    assert config["model"] == {
        "type": "MaskRCNN",
        "backbone": {"type": "DAT", "dims": [3, 4], "depths": [2, 2]},
        "neck": {"type": "FPN", "num_outs": 5, "in_channels": [3, 4]},
    }
    assert config["optimizer"] == {"type": "AdamW", "lr": 1e-4}  # replaced, not merged
    assert config["data_root"] == "elsewhere/" and config["test_pipeline"] == [{"type": "LoadImageFromFile"}]
    assert "_base_" not in config


def test_base_chain_errors(tmp_path):
    write(tmp_path, "a.py", "x = 1\n")
    write(tmp_path, "b.py", "x = 2\n")
    with pytest.raises(ConfigError, match=r"\['x'\] are set by more than one base"):
        read_mmdet_config(write(tmp_path, "c.py", "_base_ = ['a.py', 'b.py']\n"))
    with pytest.raises(ConfigError, match="include each other"):
        read_mmdet_config(write(tmp_path, "loop.py", "_base_ = 'loop.py'\n"))
    with pytest.raises(ConfigError, match="not found"):
        read_mmdet_config(write(tmp_path, "d.py", "_base_ = 'missing.py'\n"))
    write(tmp_path, "e.py", "model = 3\n")
    with pytest.raises(ConfigError, match="_delete_=True"):
        read_mmdet_config(write(tmp_path, "f.py", "_base_ = 'e.py'\nmodel = dict(type='X')\n"))


def test_pipeline_settings_of_the_fixtures():
    path = FIXTURES / "mmdet_mask_rcnn_mini" / "config.py"
    if not path.is_file():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    settings = pipeline_settings(read_mmdet_config(path))
    assert settings == {
        "img_scale": (480, 320),
        "keep_ratio": True,
        "mean": (123.675, 116.28, 103.53),
        "std": (58.395, 57.12, 57.375),
        "to_rgb": True,
        "size_divisor": 32,
    }


def test_pipeline_settings_refuse_test_time_augmentation():
    flip = {
        "test_pipeline": [
            {"type": "MultiScaleFlipAug", "img_scale": (1333, 800), "flip": True, "transforms": []}
        ]
    }
    with pytest.raises(ConfigError, match="flip"):
        pipeline_settings(flip)
    scales = {
        "test_pipeline": [
            {"type": "MultiScaleFlipAug", "img_scale": [(1333, 800), (1000, 600)], "transforms": []}
        ]
    }
    with pytest.raises(ConfigError, match="multi-scale"):
        pipeline_settings(scales)
    with pytest.raises(ConfigError, match="no test pipeline"):
        pipeline_settings({})


def test_the_release_configs_read(release_configs):
    """configs/dat/*.py with their _base_ chains: the base model merged with the size's
    backbone, the optimizer replaced (_delete_), the test pipeline the base dataset's."""
    files = sorted((release_configs / "dat").glob("*.py"))
    assert len(files) == 12
    for path in files:
        config = read_mmdet_config(path)
        model = config["model"]
        assert (
            model["type"]
            == {"mrcn": "MaskRCNN", "cmrcn": "CascadeRCNN", "rtn": "RetinaNet"}[path.stem.split("_")[0]]
        )
        assert model["backbone"]["stage_spec"][3] == ["D", "D"]  # the child's, not the base's L/D
        assert model["backbone"]["heads_q"] == [6, 12, 24, 48]  # the base's, kept
        assert model["neck"]["in_channels"] == model["backbone"]["dims"]
        assert config["optimizer"]["type"] == "AdamW" and "momentum" not in config["optimizer"]
        assert pipeline_settings(config)["img_scale"] == (1333, 800)
        assert config["data"]["test"]["ann_file"] == "data/coco/annotations/instances_val2017.json"

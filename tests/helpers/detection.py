"""Detection references: mmdet config entries read as data, the fixtures' R-CNN configs, a tiny
R-CNN, and detections compared one to one with their tolerances."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from models import create_backbone
from models.config import DATConfig
from models.rcnn import RCNN
from models.rcnn_config import CASCADE_TARGET_STDS, BBoxHeadConfig, MaskHeadConfig, RCNNConfig
from tests.helpers.paths import FIXTURES
from tests.helpers.tiny import TINY_PP_CONFIG

BOX_RTOL = 1e-3
SCORE_TOL = 1e-4
# Mask probabilities follow the box head's inputs to about 1e-4: a pasted pixel may fall on
# the other side of mask_thr_binary only this close to it.
MASK_TIE = 1e-3


def mmdet_model_entry(config: Path, key: str) -> dict:
    """``model[key]`` of a flattened mmdet config, read as data (never executed)."""

    def value(node: ast.expr):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            return {kw.arg: value(kw.value) for kw in node.keywords}
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        return ast.literal_eval(node)

    for stmt in ast.parse(config.read_text()).body:
        if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", None) == "model":
            return next(value(kw.value) for kw in stmt.value.keywords if kw.arg == key)
    raise AssertionError(f"no model.{key} in {config}")


def fixture_config(name: str) -> RCNNConfig:
    """The fixture's detector by hand: narrowed neck and heads, every other setting the
    release's (create_detector must read the same from its config.py)."""
    backbone = create_backbone(mmdet_model_entry(FIXTURES / f"mmdet_{name}_mini" / "config.py", "backbone"))
    if name == "mask_rcnn":
        return RCNNConfig(
            backbone.config,
            fpn_channels=64,
            rpn_channels=64,
            bbox_heads=(BBoxHeadConfig(fc_out_channels=256),),
            mask_head=MaskHeadConfig(conv_out_channels=64),
        )
    return RCNNConfig(
        backbone.config,
        fpn_channels=64,
        rpn_channels=64,
        fpn_extra=None,
        cascade=True,
        bbox_heads=tuple(
            BBoxHeadConfig(
                num_shared_convs=4,
                num_shared_fcs=1,
                conv_out_channels=64,
                fc_out_channels=256,
                norm=True,
                target_stds=stds,
            )
            for stds in CASCADE_TARGET_STDS
        ),
        mask_head=MaskHeadConfig(conv_out_channels=64),
    )


def assert_same_detections(boxes, scores, labels, expected):
    """Matched one to one regardless of order: same label, box within 1e-3 relative, score
    within 1e-4 (several degenerate boxes may share a box: the score tells them apart)."""
    free = set(range(len(labels)))
    assert len(labels) == len(expected["labels"])
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        close = [
            j
            for j in free
            if labels[j] == label
            and abs(scores[j] - score) <= 1e-4
            and ((boxes[j] - box).abs() / box.abs().clamp(min=1)).max() <= 1e-3
        ]
        assert close, f"no counterpart for label {int(label)} score {float(score):.5f} box {box.tolist()}"
        free.remove(min(close, key=lambda j: abs(float(scores[j] - score))))


def tiny_rcnn(cascade: bool = False, **changes) -> RCNN:
    torch.manual_seed(0)
    backbone = DATConfig.from_mapping(dict(TINY_PP_CONFIG))
    heads = (BBoxHeadConfig(fc_out_channels=32),)
    if cascade:
        heads = tuple(
            BBoxHeadConfig(
                num_shared_convs=2,
                num_shared_fcs=1,
                conv_out_channels=16,
                fc_out_channels=32,
                norm=True,
                target_stds=s,
            )
            for s in CASCADE_TARGET_STDS
        )
    config = RCNNConfig(
        backbone,
        num_classes=5,
        fpn_channels=16,
        rpn_channels=16,
        cascade=cascade,
        anchor_strides=(2, 4, 8, 16, 32),
        roi_strides=(2, 4, 8, 16),
        bbox_heads=heads,
        **{"mask_head": MaskHeadConfig(num_convs=2, conv_out_channels=16), **changes},
    )
    return RCNN(config).eval()


def match(run, box_atol: float = 0.0) -> list[tuple[int, int]]:
    """(expected, ours) pairs: same label, box within 1e-3 relative (beyond ``box_atol``, for
    boxes rounded on the way), score within 1e-4."""
    want = run["expected"]
    found = run["labels"] >= 0
    assert found.sum().item() == len(want["labels"])
    pairs, free = [], set(found.nonzero().squeeze(1).tolist())
    for i in range(len(want["labels"])):
        box = want["boxes"][i]
        candidates = [
            j
            for j in free
            if run["labels"][j] == want["labels"][i]
            and (((run["boxes"][j] - box).abs() - box_atol).clamp(min=0) / box.abs().clamp(min=1)).max()
            <= BOX_RTOL
            and abs(run["scores"][j] - want["scores"][i]) <= SCORE_TOL
        ]
        assert candidates, (
            f"no counterpart for detection {i}: label {int(want['labels'][i])}, "
            f"score {float(want['scores'][i]):.5f}, box {box.tolist()}"
        )
        j = min(candidates, key=lambda j: float((run["boxes"][j] - box).abs().max()))
        free.remove(j)
        pairs.append((i, j))
    assert not free, f"{len(free)} detections mmdet does not have"
    return pairs

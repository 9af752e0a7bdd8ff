"""RetinaNet's training targets and loss: mmdet's max-IoU anchor assignment, the sigmoid
focal loss and L1 on the encoded box deltas."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.boxes import box_iou
from models.retinanet_boxes import encode_boxes

NEGATIVE, IGNORED = -1, -2


def assign_anchors(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4
) -> torch.Tensor:
    """mmdet's MaxIoUAssigner as RetinaNet configures it: for each anchor (N, 4) the index of
    its ground truth (K, 4), NEGATIVE or IGNORED. IoU >= ``pos_iou`` is positive, below
    ``neg_iou`` negative, in between ignored; then every ground truth also takes the anchors
    it overlaps best (min_pos_iou 0, all ties), so a small or thin digit still has one.
    A ground truth overlapping no anchor at all takes none (mmdet would take every anchor)."""
    assigned = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return assigned
    iou = box_iou(anchors, gt_boxes)  # (N, K)
    best, which = iou.max(dim=1)
    assigned[best >= neg_iou] = IGNORED
    positive = best >= pos_iou
    assigned[positive] = which[positive]
    gt_best = iou.max(dim=0).values
    for k in range(gt_boxes.shape[0]):  # later ground truths win ties, as in mmdet
        if gt_best[k] > 0:
            assigned[iou[:, k] == gt_best[k]] = k
    return assigned


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.) of sigmoid ``logits`` against 0/1 ``targets``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def detection_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, dict[str, float]]:
    """RetinaNet's loss on one batch: focal loss summed over the non-ignored anchors and all
    classes, plus L1 on the encoded deltas of the positives, both divided by the batch's
    number of positives. ``targets``: per image, boxes (K, 4) in canvas pixels and labels (K,)."""
    num_classes = logits.shape[-1]
    assigned = torch.stack([assign_anchors(anchors, boxes) for boxes, _ in targets])  # (B, N)
    classes = torch.zeros_like(logits)
    box_targets = torch.zeros_like(deltas)
    for b, (boxes, labels) in enumerate(targets):
        positive = assigned[b] >= 0
        if positive.any():
            matched = assigned[b][positive]
            classes[b, positive] = F.one_hot(labels[matched], num_classes).to(classes.dtype)
            box_targets[b, positive] = encode_boxes(anchors[positive], boxes[matched])
    positive = assigned >= 0
    num_pos = max(int(positive.sum()), 1)
    valid = assigned != IGNORED
    cls_loss = sigmoid_focal_loss(logits[valid], classes[valid]).sum() / num_pos
    box_loss = (deltas[positive] - box_targets[positive]).abs().sum() / num_pos
    return cls_loss + box_loss, {"cls": cls_loss.item(), "box": box_loss.item(), "pos": float(positive.sum())}

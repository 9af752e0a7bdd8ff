"""Instance masks out of the server: a detection's mask probabilities pasted onto its image,
then encoded as COCO compressed RLE (pycocotools) or as polygons (OpenCV's contours).

A mask is never larger than its image: the box's probabilities are pasted at the decoded
image's own size (mmdet's ``_do_paste_mask``, ``models.paste_masks``), one detection at a
time, so a request holds one image-sized mask in memory at once."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from models import paste_masks

MaskFormat = Literal["none", "rle", "polygon"]
POLYGON_DECIMALS = 1


def paste(
    probabilities: np.ndarray, box: np.ndarray, width: int, height: int, threshold: float
) -> np.ndarray:
    """(S, S) probabilities over ``box`` (x1 y1 x2 y2, the image's pixels) -> (height, width)
    bool, ``>= threshold``."""
    mask = paste_masks(
        torch.from_numpy(np.ascontiguousarray(probabilities[None], np.float32)),
        torch.from_numpy(np.asarray(box, np.float32)[None]),
        height,
        width,
        threshold,
    )
    return mask[0].numpy()


def rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE: ``{"size": [h, w], "counts": "..."}`` (column-major, as COCO)."""
    from pycocotools import mask as coco_mask

    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def polygons(mask: np.ndarray) -> list[list[float]]:
    """The outer contours of each connected region (holes are not kept), as COCO's flat
    ``[x1, y1, x2, y2, ...]`` lists in pixel coordinates; regions of under 3 points are
    dropped (COCO needs an area)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [
        np.round(c.reshape(-1).astype(np.float64), POLYGON_DECIMALS).tolist() for c in contours if len(c) >= 3
    ]


def encode(mask: np.ndarray, fmt: MaskFormat) -> dict | list[list[float]]:
    return rle(mask) if fmt == "rle" else polygons(mask)

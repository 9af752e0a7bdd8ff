"""The label files shipped in ``models/labels/`` and the reading of a user's label file.

Below the registry and the detectors (it imports nothing of the package), so both can name
their labels without importing each other.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

LABELS_DIR = Path(__file__).parent / "labels"
IMAGENET_LABELS_FILE = "imagenet1k.txt"
COCO_LABELS_FILE = "coco.txt"


@cache
def imagenet_labels() -> tuple[str, ...]:
    """ImageNet-1k class names in training order (sorted WordNet ids): the first lemma."""
    lines = (LABELS_DIR / IMAGENET_LABELS_FILE).read_text().splitlines()
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in lines)


def coco_categories() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """COCO's 80 labels in training order and their category ids (1-90, with gaps)."""
    names, ids = [], []
    for line in (LABELS_DIR / COCO_LABELS_FILE).read_text().splitlines():
        if line.strip():
            category_id, name = line.split("\t", 1)
            ids.append(int(category_id))
            names.append(name.strip())
    return tuple(names), tuple(ids)


def read_labels(path: str | Path) -> list[str]:
    """One label per line (blank lines ignored)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]

"""The server's side of each task (service.tasks): a graph's batch outputs split per image, the
outputs of nothing found, the v2 tensors they fill, and the tasks the server does not serve."""

from __future__ import annotations

import numpy as np
import pytest

from models import CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION, Letterbox, Preprocessing
from models.tasks import FEATURES, MASK_SIZE
from models.transforms import ImageMeta
from service.backends.base import DetectionOutput, ImageOutput, ModelMeta
from service.tasks import SERVED, served

LABELS = ("a", "b", "c")


def meta(task, max_detections=3) -> ModelMeta:
    pre = Preprocessing(32) if task is CLASSIFICATION else Letterbox(32)
    return ModelMeta("m", "v1", LABELS, pre, task=task, max_detections=max_detections)


def detector_arrays(with_masks: bool) -> list[np.ndarray]:
    """Two images' padded outputs: one detection in the first, two in the second."""
    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    scores = np.array([[0.9, 0, 0], [0.8, 0.7, 0]], np.float32)
    labels = np.array([[2, -1, -1], [0, 1, -1]], np.int64)
    masks = np.random.default_rng(0).random((2, 3, MASK_SIZE, MASK_SIZE), np.float32)
    return [boxes, scores, labels, masks] if with_masks else [boxes, scores, labels]


def test_a_classifier_s_logits_split_into_one_row_per_image():
    logits = np.arange(6, dtype=np.float16).reshape(2, 3)
    outputs = served(CLASSIFICATION).per_image([logits])
    assert [type(o) for o in outputs] == [ImageOutput, ImageOutput]
    assert [o.logits.tolist() for o in outputs] == [[0, 1, 2], [3, 4, 5]]
    assert all(o.logits.dtype == np.float32 for o in outputs)


@pytest.mark.parametrize("task", [DETECTION, INSTANCE_SEGMENTATION])
def test_a_detector_s_padding_is_dropped_and_masks_kept_where_the_task_has_them(task):
    arrays = detector_arrays(task.has_masks)
    first, second = served(task).per_image(arrays)
    assert isinstance(first, DetectionOutput) and isinstance(second, DetectionOutput)
    assert first.labels.tolist() == [2] and second.labels.tolist() == [0, 1]
    assert second.boxes.tolist() == arrays[0][1, :2].tolist()
    if task.has_masks:
        assert first.masks is not None and second.masks is not None
        assert np.array_equal(second.masks, arrays[3][1, :2])
    else:
        assert first.masks is None and second.masks is None


def test_keep_ratio_boxes_go_back_to_each_image_s_pixels():
    arrays = detector_arrays(with_masks=False)
    metas = [ImageMeta((10, 20), (10, 20), (2.0, 2.0, 2.0, 2.0)), ImageMeta((5, 5), (5, 5), (1.0,) * 4)]
    first, second = served(DETECTION).per_image(arrays, metas)
    assert first.in_image_pixels and first.boxes.tolist() == (arrays[0][0, :1] / 2).tolist()
    assert second.boxes.tolist() == arrays[0][1, :2].tolist()


@pytest.mark.parametrize("task", [CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION])
def test_nothing_found_fills_the_v2_tensors_with_each_output_s_empty_slots(task):
    model = meta(task)
    served_task = served(task)
    outputs = served_task.empty(2, len(LABELS))
    assert len(outputs) == 2
    tensors = served_task.v2_tensors(model, outputs)
    specs = served_task.v2_outputs(model)
    assert [s.name for s in specs] == list(tensors) == list(task.output_names)
    for spec in specs:
        tensor = tensors[spec.name]
        assert tensor.shape == (2, *spec.shape[1:]) and spec.shape[0] == -1
        assert spec.datatype == {np.float32: "FP32", np.int64: "INT64"}[tensor.dtype.type]
        assert (tensor == task.output(spec.name).fill).all()  # labels -1, everything else 0


def test_the_v2_tensors_pad_each_image_s_detections_to_the_model_s_count():
    model = meta(INSTANCE_SEGMENTATION, max_detections=3)
    served_task = served(INSTANCE_SEGMENTATION)
    arrays = detector_arrays(with_masks=True)
    tensors = served_task.v2_tensors(model, served_task.per_image(arrays))
    assert tensors["labels"].tolist() == arrays[2].tolist()
    assert np.array_equal(tensors["masks"][1, :2], arrays[3][1, :2]) and not tensors["masks"][0, 1:].any()


def test_a_backbone_s_features_are_not_served():
    assert FEATURES.name not in SERVED
    with pytest.raises(ValueError, match="does not serve features models; it serves classification"):
        served(FEATURES)

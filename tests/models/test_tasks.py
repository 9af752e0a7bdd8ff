"""The task contract: one object per kind of output, read back from its name."""

from __future__ import annotations

import pytest

from models import CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION, TASKS, create_model, task_named


def test_a_name_reads_back_as_its_task_and_an_unknown_one_is_refused():
    for task in (CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION):
        assert task_named(task.name) is task and str(task) == task.name
    with pytest.raises(ValueError, match="unknown task 'segmentation'; known tasks: classification"):
        task_named("segmentation")


def test_outputs_by_task():
    assert CLASSIFICATION.output_names == ("logits",) and CLASSIFICATION.labelled_outputs == ("logits",)
    assert DETECTION.output_names == ("boxes", "scores", "labels") and DETECTION.finds_objects
    assert INSTANCE_SEGMENTATION.output_names == ("boxes", "scores", "labels", "masks")
    assert INSTANCE_SEGMENTATION.has_masks and not DETECTION.has_masks
    assert INSTANCE_SEGMENTATION.output("masks").resolve(classes=80, detections=100) == (100, 28, 28)
    assert DETECTION.output("labels").fill == -1
    with pytest.raises(KeyError, match="detection has no output 'masks'"):
        DETECTION.output("masks")
    assert [t.name for t in TASKS.values() if t.exportable] == [
        "classification",
        "detection",
        "instance_segmentation",
    ]


def test_models_carry_their_task_object():
    assert create_model("dat_digits").task is CLASSIFICATION
    assert create_model("dat_digits_detector").task is DETECTION

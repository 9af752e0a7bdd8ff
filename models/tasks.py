"""What a model's output means, one object per kind of task.

A model says which task it solves (``model.task``); the exporter, the runtimes and the server
ask that object what the outputs are, instead of comparing names. The name is only for
serialisation (manifests, ``--task``, the ``task`` field of /models, metric labels) and is
read back with :func:`task_named`, which refuses an unknown name.

- classification: ``logits`` (classes,) per image;
- detection: ``boxes`` (M, 4) x1 y1 x2 y2, ``scores`` (M,), ``labels`` (M,) with -1 in the
  empty slots, best first;
- instance segmentation: a detection's outputs plus ``masks`` (M, S, S), the mask head's
  probabilities of each detection's class over its box (S = 28 for mmdet's FCNMaskHead),
  pasted onto the image only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputTensor:
    """One output of a task's graph: its name, numpy dtype and per-image shape, where
    ``"detections"`` stands for the model's detections per image and ``"classes"`` for its
    number of labels."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    fill: float = 0  # in the slots past an image's last detection

    def resolve(self, classes: int, detections: int) -> tuple[int, ...]:
        sizes = {"classes": classes, "detections": detections}
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class Task:
    name: str
    outputs: tuple[OutputTensor, ...]
    finds_objects: bool = False  # boxes, scores and labels per detection
    has_masks: bool = False  # and a mask per detection
    exportable: bool = True  # our ONNX export writes its graph
    # Triton's classification extension reads class names for these outputs
    labelled_outputs: tuple[str, ...] = ()

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def output(self, name: str) -> OutputTensor:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(f"{self.name} has no output {name!r}; it has {', '.join(self.output_names)}")

    def __str__(self) -> str:
        return self.name


MASK_SIZE = 28  # mmdet's FCNMaskHead: a 14 x 14 RoI upsampled twice

_DETECTIONS = (
    OutputTensor("boxes", "float32", ("detections", 4)),
    OutputTensor("scores", "float32", ("detections",)),
    OutputTensor("labels", "int64", ("detections",), fill=-1),
)

CLASSIFICATION = Task(
    "classification", (OutputTensor("logits", "float32", ("classes",)),), labelled_outputs=("logits",)
)
DETECTION = Task("detection", _DETECTIONS, finds_objects=True)
INSTANCE_SEGMENTATION = Task(
    "instance_segmentation",
    (*_DETECTIONS, OutputTensor("masks", "float32", ("detections", MASK_SIZE, MASK_SIZE))),
    finds_objects=True,
    has_masks=True,
)

# A backbone's feature maps: built for the detectors, neither served nor exported alone
FEATURES = Task("features", (), exportable=False)

TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION)}


def task_named(name: str) -> Task:
    """The task a serialised name stands for; ValueError naming the known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None

"""The model an export starts from (:func:`load_model`), and the inputs it is verified on:
real pictures through the model's own preprocessing, checked before the slow part to give a
detector something to find (:func:`check_detections`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from . import validate
from .options import DEFAULT_MODEL, TASKS, ExportError, ExportOptions

if TYPE_CHECKING:
    from models import DAT, RCNN, RetinaNet


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= 400 else text[:400] + " ..."


def load_model(options: ExportOptions) -> DAT | RetinaNet | RCNN:
    """The model to export, in eval mode, with its weights; raises ExportError."""
    import models
    from models.labels import read_labels

    source = options.config or options.model or DEFAULT_MODEL
    try:
        labels = read_labels(options.labels) if options.labels else None
        weights = None if options.config is not None else models.get_spec(str(source)).weights
        embedded = weights is not None
        if options.checkpoint is None and not embedded and not options.random_weights:
            raise ExportError(
                f"{source} has no embedded weights: pass --checkpoint FILE "
                "(or --random-weights for a smoke test)"
            )
        # --random-weights only stands in for weights that are absent, never replaces them.
        absent = options.random_weights and not (weights is not None and weights.is_file())
        model = models.create_model(
            source, labels=labels, pretrained=options.checkpoint is None and not absent
        )
        if options.checkpoint is not None:
            models.load_checkpoint(model, options.checkpoint)
        if options.name:
            model.info.name = options.name
        if options.task is not None and TASKS[options.task] is not model.task:
            raise ExportError(f"{source} is a {model.task} model, not {options.task}")
        if not model.task.exportable:
            raise ExportError(
                f"{source} is an {model.task} model: its ONNX export is not written yet "
                f"(exportable tasks: {', '.join(sorted(TASKS))})"
            )
        if isinstance(model, models.RCNN) and not model.task.has_masks:  # a Faster R-CNN
            raise ExportError(
                f"{source} is an R-CNN detector without a mask head, which only the torch backend "
                "serves: ONNX export takes classifiers, RetinaNet, Mask R-CNN and Cascade Mask R-CNN"
            )
        if not getattr(model, "static_graph", True):  # the model says its shapes depend on the data
            raise ExportError(
                f"{source} runs part of its forward on a data-dependent number of detections (e.g. a "
                "mask head on the kept ones), which only the torch backend serves: ONNX export takes "
                "classifiers, RetinaNet, Mask R-CNN and Cascade Mask R-CNN"
            )
    except ExportError:
        raise
    except (KeyError, ValueError, OSError) as exc:  # unknown name, bad config, CheckpointError
        raise ExportError(_first_line(exc)) from None
    except Exception as exc:  # e.g. a YAML syntax error
        raise ExportError(f"cannot build the model: {type(exc).__name__}: {_first_line(exc)}") from None
    return model.eval()


def verification_images(model: DAT | RetinaNet | RCNN, paths) -> torch.Tensor | None:
    """Pictures through the model's own preprocessing (None: seeded random inputs), each on
    the export's square canvas (a keep-ratio detector's input is padded with zeros to it)."""
    if not paths:
        return None
    from PIL import Image

    size = model.input_size
    tensors = []
    for path in paths:
        try:
            with Image.open(path) as image:
                tensor = model.info.preprocessing(image.convert("RGB"))
        except OSError as exc:
            raise ExportError(f"cannot read verification image {path}: {exc}") from None
        canvas = torch.zeros(3, size, size)
        canvas[:, : tensor.shape[1], : tensor.shape[2]] = tensor
        tensors.append(canvas)
    return torch.stack(tensors)


def check_detections(
    references: validate.References,
    images: torch.Tensor | None,
    options: ExportOptions,
    log: Callable[[str], None],
) -> None:
    """Before the slow part: a detector's verification compares its detections, so PyTorch must
    find some in the inputs (an untrained head finds nothing in random noise); ExportError if not.
    Its outputs stay in ``references`` for the verification of the same inputs."""
    batch_sizes = validate.verification_batches(options.batch, options.verify_batches)
    size = references.model.input_size
    inputs = images if images is not None else validate.sample_inputs(size, max(batch_sizes))
    found = 0
    for start in range(0, inputs.shape[0], 8):
        labels = references.outputs(inputs[start : start + 8])[2]
        found += int((labels >= 0).sum())
    what = f"the {inputs.shape[0]} --verify-images" if images is not None else "seeded random inputs"
    if not found:
        raise ExportError(
            f"the detector found no objects in {what}, so verifying the export would "
            "compare nothing: pass --verify-images with pictures it finds objects in"
        )
    log(f"    the reference finds {found} objects in {what}")

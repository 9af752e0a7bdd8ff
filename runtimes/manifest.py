"""The manifest beside exported artifacts, and the only way to load them.

``manifest.json`` describes everything a runtime needs to serve the artifacts correctly:
model name and config, input/output tensors (names, dtypes, shapes with the dynamic batch
axis), the batch range, preprocessing, labels, precision, opset, grid-sample mode, tool
versions, parity figures and the sha256 of every file.

The exporter writes it (:func:`write_manifest`), the server reads it::

    from runtimes.manifest import Manifest, ManifestError

    m = Manifest.load("exports/dat_digits")   # checks format, status and every file's sha256
    m.onnx_path, m.engine_path                # Path, Path | None (TensorRT engine)
    m.input_name, m.output_names              # "images", ("logits",) | ("boxes", "scores", "labels")
    m.input_dtype, m.image_size               # "float32", 224 (input is NCHW, float32)
    m.batch.min, m.batch.opt, m.batch.max     # the dynamic batch range
    m.preprocessing(pil_rgb_image)            # a models.Transform (or KeepRatioResize), the one definition
    m.labels, m.num_classes, m.precision, m.model_name, m.task  # a models.Task (name in the JSON)
    m.category_ids                            # detectors: COCO category id of each label

``ManifestError`` (a ValueError) names what is wrong: missing directory or manifest, another
format or version, a failed export, a missing file or a hash mismatch, inconsistent fields.
It and the manifest's field types (:class:`BatchRange`, :class:`TensorSpec`, :class:`Artifact`)
are defined in :mod:`runtimes.manifest_fields`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import KeepRatioResize, Task, Transform, preprocessing_from_dict, task_named

from .hashing import sha256_file
from .manifest_fields import Artifact, BatchRange, ManifestError, TensorSpec, typed

MANIFEST_NAME = "manifest.json"
# The graph's input and output names: the ONNX export writes them, the service and Triton
# model repositories name the same tensors.
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
PRECISIONS = ("fp32", "fp16")
STATUSES = ("ok", "failed")
FORMAT = "dat-serve/export"
VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest. ``artifacts`` maps a role (``onnx``, ``engine``, ``engine_onnx``) to
    its file; ``verification`` maps a runtime to its parity figures (see export.verification)."""

    status: str  # "ok" or "failed"
    task: Task
    model_name: str
    model_config: dict
    preprocessing: Transform | KeepRatioResize  # keep-ratio: padded to its canvas
    labels: tuple[str, ...]
    precision: str
    opset: int
    grid_sample: str  # as requested: native / decomposed / auto
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]  # logits | boxes, scores, labels
    batch: BatchRange
    artifacts: dict[str, Artifact]
    verification: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    created: str = ""
    weights: dict = field(default_factory=dict)  # where the weights came from (+ sha256)
    category_ids: tuple[int, ...] = ()  # detectors: COCO category id per label (empty: none)
    directory: Path | None = None  # set by load()

    # -- what a runtime needs ------------------------------------------------------------

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def output(self) -> TensorSpec:
        """The first output (a classifier's only one)."""
        return self.outputs[0]

    @property
    def output_name(self) -> str:
        return self.output.name

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def input_dtype(self) -> str:
        return self.input.dtype

    @property
    def image_size(self) -> int:
        return int(self.input.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def onnx_path(self) -> Path:
        return self._path("onnx")

    @property
    def engine_path(self) -> Path | None:
        return self._path("engine") if "engine" in self.artifacts else None

    @property
    def engine_info(self) -> dict:
        """TensorRT version and GPU the engine was built with ({} without an engine)."""
        engine = self.artifacts.get("engine")
        return dict(engine.extra) if engine else {}

    def _path(self, role: str) -> Path:
        if role not in self.artifacts:
            raise ManifestError(f"manifest lists no {role} artifact")
        base = self.directory if self.directory is not None else Path(".")
        return base / self.artifacts[role].file

    # -- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "status": self.status,
            "created": self.created,
            "task": self.task.name,
            "model": {"name": self.model_name, "config": self.model_config, "weights": self.weights},
            "inputs": [self.input.to_dict()],
            "outputs": [o.to_dict() for o in self.outputs],
            "batch": self.batch.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "labels": list(self.labels),
            **({"category_ids": list(self.category_ids)} if self.category_ids else {}),
            "precision": self.precision,
            "opset": self.opset,
            "grid_sample": self.grid_sample,
            "artifacts": {role: a.to_dict() for role, a in self.artifacts.items()},
            "verification": self.verification,
            "tools": self.tools,
            "timings_s": self.timings_s,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict, directory: Path | None = None) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"not a {FORMAT} manifest")
        if data.get("version") != VERSION:
            raise ManifestError(
                f"manifest version {data.get('version')!r} is not supported "
                f"(this code reads version {VERSION})"
            )
        try:
            inputs, outputs = typed(data["inputs"], list, "inputs"), typed(data["outputs"], list, "outputs")
            if len(inputs) != 1 or not outputs:
                raise ManifestError("expected exactly one input and at least one output")
            model = typed(data["model"], dict, "model")
            preprocessing = preprocessing_from_dict(typed(data["preprocessing"], dict, "preprocessing"))
            artifacts = typed(data["artifacts"], dict, "artifacts")
            return cls(
                status=typed(data["status"], str, "status"),
                task=task_named(typed(data["task"], str, "task")),
                model_name=typed(model["name"], str, "the model name"),
                model_config=typed(model["config"], dict, "the model config"),
                preprocessing=preprocessing,
                labels=tuple(typed(label, str, "a label") for label in typed(data["labels"], list, "labels")),
                precision=typed(data["precision"], str, "precision"),
                opset=typed(data["opset"], int, "opset"),
                grid_sample=typed(data["grid_sample"], str, "grid_sample"),
                input=TensorSpec.from_dict(typed(inputs[0], dict, "an input")),
                outputs=tuple(TensorSpec.from_dict(typed(o, dict, "an output")) for o in outputs),
                batch=BatchRange.from_dict(typed(data["batch"], dict, "batch")),
                artifacts={
                    role: Artifact.from_dict(typed(a, dict, f"artifact {role}"))
                    for role, a in artifacts.items()
                },
                verification=typed(data.get("verification") or {}, dict, "verification"),
                tools=typed(data.get("tools") or {}, dict, "tools"),
                timings_s=typed(data.get("timings_s") or {}, dict, "timings_s"),
                notes=tuple(typed(data.get("notes") or [], list, "notes")),
                created=str(data.get("created", "")),
                weights=typed(model.get("weights") or {}, dict, "the weights"),
                category_ids=tuple(int(i) for i in data.get("category_ids") or ()),
                directory=directory,
            )
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ManifestError(f"malformed manifest: {detail}") from None

    @classmethod
    def load(
        cls, directory: str | Path, *, verify_hashes: bool = True, allow_failed: bool = False
    ) -> Manifest:
        """Reads ``directory/manifest.json`` and checks it; raises :class:`ManifestError`."""
        return read_manifest(directory, verify_hashes=verify_hashes, allow_failed=allow_failed)


def _check_consistency(m: Manifest) -> None:
    if "onnx" not in m.artifacts:
        raise ManifestError("manifest lists no onnx artifact")
    for role, artifact in m.artifacts.items():
        if Path(artifact.file).is_absolute() or ".." in Path(artifact.file).parts:
            raise ManifestError(f"{role} file {artifact.file!r} is not inside the export directory")
    expected = m.task.output_names
    if m.output_names != expected:
        raise ManifestError(
            f"{m.task.name} graphs have outputs {list(expected)}; the manifest lists {list(m.output_names)}"
        )
    if m.precision not in PRECISIONS:
        raise ManifestError(f"precision {m.precision!r} is none of {', '.join(PRECISIONS)}")
    if len(m.input.shape) != 4 or m.input.shape[1] != 3:
        raise ManifestError(f"input shape {list(m.input.shape)} is not (batch, 3, size, size)")
    if (
        m.task.labelled_outputs
        and m.output.shape
        and isinstance(m.output.shape[-1], int)
        and m.output.shape[-1] != len(m.labels)
    ):
        raise ManifestError(f"{len(m.labels)} labels for {m.output.shape[-1]} outputs")
    if m.category_ids and len(m.category_ids) != len(m.labels):
        raise ManifestError(f"{len(m.category_ids)} category ids for {len(m.labels)} labels")
    size = m.input.shape[-1] if m.input.shape else None
    made = (
        m.preprocessing.canvas if isinstance(m.preprocessing, KeepRatioResize) else m.preprocessing.input_size
    )
    if isinstance(size, int) and size != made:
        raise ManifestError(f"preprocessing makes {made}px inputs but the graph takes {size}px")


def read_manifest(
    directory: str | Path, *, verify_hashes: bool = True, allow_failed: bool = False
) -> Manifest:
    """Loads and checks a manifest: format, version, status, consistency, every file's hash."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"export directory not found: {directory}")
    if not path.is_file():
        raise ManifestError(
            f"no {MANIFEST_NAME} in {directory} (not an export, or the export did not finish)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
    manifest = Manifest.from_dict(data, directory=directory)
    if manifest.status not in STATUSES:
        raise ManifestError(f"status {manifest.status!r} is none of {', '.join(STATUSES)}")
    if manifest.status != "ok" and not allow_failed:
        failures = [
            f"{runtime}: {v.get('summary', 'failed')}"
            for runtime, v in manifest.verification.items()
            if isinstance(v, dict) and not v.get("passed", False)
        ]
        detail = "; ".join(failures) or "see the manifest"
        raise ManifestError(f"{directory}: the export failed verification ({detail})")
    _check_consistency(manifest)
    for role, artifact in manifest.artifacts.items():
        file = directory / artifact.file
        if not file.is_file():
            raise ManifestError(f"{role} file listed in the manifest is missing: {file}")
        if verify_hashes:
            if file.stat().st_size != artifact.bytes or sha256_file(file) != artifact.sha256:
                raise ManifestError(
                    f"{role} file {file} does not match the sha256 in the manifest "
                    "(modified or replaced after export)"
                )
    return manifest


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Hashes every listed artifact and writes ``directory/manifest.json`` atomically."""
    directory = Path(directory)
    artifacts = {}
    for role, artifact in manifest.artifacts.items():
        file = directory / artifact.file
        if not file.is_file():
            raise ManifestError(f"cannot list {role}: {file} does not exist")
        artifacts[role] = Artifact(
            **{**artifact.to_dict(), "sha256": sha256_file(file), "bytes": file.stat().st_size}
        )
    data = Manifest(**{**manifest.__dict__, "artifacts": artifacts}).to_dict()
    text = json.dumps(_plain(data), indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    target = directory / MANIFEST_NAME
    os.replace(tmp, target)
    return target


def _plain(value: Any) -> Any:
    """JSON-safe copy: paths as strings, non-finite floats as "inf" / "nan" strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

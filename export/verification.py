"""What a verification found: one runtime's report (:class:`Verification`) of its batches
(:class:`BatchResult`), as the manifest records it. The criteria are in :mod:`export.parity`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from models import CLASSIFICATION, Task


@dataclass
class BatchResult:
    """Classifiers: max |logit error| and top-1 agreement. Detectors: max relative box error
    and the share of reference detections matched (``detections`` counts them)."""

    batch: int
    max_abs_error: float
    top1_agreement: float
    tolerance: float
    passed: bool
    detections: int | None = None
    min_mask_iou: float | None = None  # instance masks: the worst matched pair's IoU
    mask_error: float | None = None  # float16 two-stage masks: mean probability error (export.overlap)


@dataclass
class Verification:
    """What one runtime was checked for, and how it did."""

    runtime: str
    artifact: str
    precision: str
    tolerance_rule: str
    checker: str = "not run"  # "ok" / "not run" / the checker's message
    results: list[BatchResult] = field(default_factory=list)
    error: str | None = None  # the runtime failed to load or run
    task: Task = CLASSIFICATION

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.checker in ("ok", "not run")
            and bool(self.results)
            and all(r.passed for r in self.results)
        )

    @property
    def max_abs_error(self) -> float | None:
        return max((r.max_abs_error for r in self.results), default=None)

    @property
    def top1_agreement(self) -> float | None:
        return min((r.top1_agreement for r in self.results), default=None)

    @property
    def min_mask_iou(self) -> float | None:
        return min((r.min_mask_iou for r in self.results if r.min_mask_iou is not None), default=None)

    def summary(self) -> str:
        if self.error:
            return f"{self.runtime}: FAILED ({self.error})"
        if self.checker not in ("ok", "not run"):
            return f"{self.runtime}: FAILED (onnx.checker: {self.checker})"
        verdict = "ok" if self.passed else "FAILED"
        sizes = ",".join(str(r.batch) for r in self.results)
        if self.task.finds_objects:
            found = sum(r.detections or 0 for r in self.results)
            masks = ""
            if self.task.has_masks and self.min_mask_iou is not None:
                masks = f", min mask IoU {self.min_mask_iou:.4f}"
            return (
                f"{self.runtime}: {verdict} - {found} detections, {self.top1_agreement:.0%} "
                f"matched, max relative box error {self.max_abs_error:.3g}{masks} "
                f"({self.tolerance_rule}), batches {sizes}"
            )
        return (
            f"{self.runtime}: {verdict} - max abs error {self.max_abs_error:.3g} "
            f"({self.tolerance_rule}), top-1 agreement {self.top1_agreement:.0%}, "
            f"batches {sizes}"
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(
            task=self.task.name,
            passed=self.passed,
            max_abs_error=self.max_abs_error,
            top1_agreement=self.top1_agreement,
        )
        if self.task.has_masks:
            data["min_mask_iou"] = self.min_mask_iou
        return data

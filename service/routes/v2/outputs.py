"""A v2 response's outputs: the ones a request asks for, filled from the batch's results as the
exported graph's tensors (or Triton's classification strings)."""

from __future__ import annotations

import numpy as np

from ... import v2protocol as v2
from ...errors import BadRequest
from ...runtime import ModelRuntime
from .catalog import output_specs


def requested_outputs(runtime: ModelRuntime, request: v2.InferRequest) -> list[v2.RequestedOutput]:
    """The outputs the request names (all the model's when it names none), each one the model's."""
    known = {t.name for t in output_specs(runtime)}
    if not request.outputs:
        return [v2.RequestedOutput(name, request.binary_output) for name in sorted(known)]
    for output in request.outputs:
        if output.name not in known:
            raise BadRequest(
                f"unknown output {output.name!r}; model {runtime.meta.name!r} has "
                f"{', '.join(repr(n) for n in sorted(known))}"
            )
        if output.classification and output.name not in runtime.task.labelled_outputs:
            raise BadRequest(
                f"the classification parameter applies to a classifier's logits; "
                f"{runtime.meta.name!r} is a {runtime.task} model"
            )
    return request.outputs


def response_output(
    output: v2.RequestedOutput, tensors: dict[str, np.ndarray], labels: tuple[str, ...]
) -> v2.ResponseOutput:
    values = tensors[output.name]
    if output.classification:
        elements = v2.classification(values, output.classification, labels)
        shape = (values.shape[0], len(elements) // max(1, values.shape[0]))
        return v2.ResponseOutput(output.name, v2.BYTES, shape, elements, output.binary)
    datatype = "INT64" if values.dtype == np.int64 else "FP32"
    return v2.ResponseOutput(output.name, datatype, values.shape, values, output.binary)

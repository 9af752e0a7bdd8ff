"""``python -m bench parity``: numerics of the model on a device/precision against CPU fp32.

For each precision, runs the same random inputs through the model on ``--device`` and through
the float32 model on the CPU, and reports the max abs error of the logits and the top-1
agreement per batch size.
"""

from __future__ import annotations

import torch

from models import create_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def run(
    model_name: str = "dat_tiny",
    device: str = "cuda",
    precisions=("fp32", "fp16", "bf16"),
    batch_sizes=(1, 8, 64),
    seed: int = 0,
    progress=print,
) -> dict:
    torch.manual_seed(seed)
    reference = create_model(model_name, pretrained=False)
    size = reference.input_size
    inputs = torch.randn(max(batch_sizes), 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = torch.cat([reference(chunk) for chunk in inputs.split(8)])
    results = []
    for precision in precisions:
        dtype = DTYPES[precision]
        model = create_model(model_name, pretrained=False)
        model.load_state_dict(reference.state_dict())
        model = model.to(device, dtype)
        for batch in batch_sizes:
            with torch.inference_mode():
                got = model(inputs[:batch].to(device, dtype)).float().cpu()
            want = expected[:batch]
            row = {
                "precision": precision,
                "batch_size": batch,
                "max_abs_error": float((got - want).abs().max()),
                "mean_abs_logit": float(want.abs().mean()),
                "top1_agreement": float((got.argmax(1) == want.argmax(1)).float().mean()),
            }
            results.append(row)
            progress(
                f"  {precision} batch {batch:3d}: max abs error {row['max_abs_error']:.2e} "
                f"(mean |logit| {row['mean_abs_logit']:.2f}), top-1 agreement "
                f"{row['top1_agreement']:.1%}"
            )
    return {"model": model_name, "device": device, "results": results}

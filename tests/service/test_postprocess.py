"""Backend outputs -> response objects."""

from __future__ import annotations

import numpy as np
import pytest

from service.postprocess import softmax, top_k


@pytest.mark.parametrize("k", [1, 5, 37, 999, 1000])
def test_top_k_is_the_stable_sort_of_the_probabilities(k):
    rng = np.random.default_rng(k)
    labels = [f"class {i}" for i in range(1000)]
    # rounded: many exact ties, which must come lower index first
    for logits in (
        rng.standard_normal(1000).astype(np.float32),
        np.round(rng.standard_normal(1000), 1).astype(np.float32),
        np.zeros(1000, np.float32),
    ):
        probs = softmax(logits)
        want = np.argsort(-probs, kind="stable")[:k]
        got = top_k(logits, labels, k)
        assert [p.index for p in got] == want.tolist()
        assert [p.label for p in got] == [labels[i] for i in want]
        assert [p.probability for p in got] == probs[want].tolist()

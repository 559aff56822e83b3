"""Training-client evaluators (tinker-cookbook ``TrainingClientEvaluator``): called with the training client
at the evaluation steps of a loop, they return metrics that join that step's row."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cookbook.supervised.nll import weighted_mean_nll


class NLLEvaluator:
    """``{prefix}/nll``: the weighted mean NLL of held-out datums under the current weights, through
    ``forward`` (no gradient, no update). tinker-cookbook's ``NLLEvaluator`` on a training client."""

    def __init__(self, data: Sequence[Any], name: str = "test"):
        self.data = list(data)
        self.name = name

    def __call__(self, training_client: Any) -> dict[str, float | None]:
        if not self.data:
            return {}
        out = training_client.forward(self.data, "cross_entropy").result()
        lps = [np.asarray(o["logprobs"].tolist(), dtype=np.float64) for o in out.loss_fn_outputs]
        ws = [np.asarray(d.loss_fn_inputs["weights"].tolist(), dtype=np.float64) for d in self.data]
        nll = weighted_mean_nll(lps, ws)
        return {f"{self.name}/nll": nll if math.isfinite(nll) else None}

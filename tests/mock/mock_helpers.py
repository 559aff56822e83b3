"""Shared helpers for the mock-server tests (datum builders on the real SDK types)."""

from __future__ import annotations

import numpy as np
import tinker
from tinker import types

TINY = "cookbook/tiny-test"
RL_LOSSES = ("importance_sampling", "ppo", "cispo", "dro", "gspo")


def ce_datum(tokens: list[int], weights: list[float] | None = None) -> types.Datum:
    """Next-token datum: input tokens[:-1], targets tokens[1:]."""
    n = len(tokens) - 1
    w = np.ones(n, dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": np.asarray(tokens[1:], dtype=np.int64), "weights": w},
    )


def rl_datum(
    prompt: list[int], completion: list[int], sampler_logprobs: list[float], advantage: float, loss: str
) -> types.Datum:
    tokens = prompt + completion
    n = len(tokens) - 1
    lp = np.zeros(n, dtype=np.float32)
    adv = np.zeros(n, dtype=np.float32)
    start = len(prompt) - 1
    lp[start:] = sampler_logprobs
    adv[start:] = advantage
    inputs: dict[str, np.ndarray] = {
        "target_tokens": np.asarray(tokens[1:], dtype=np.int64),
        "logprobs": lp,
        "advantages": adv,
    }
    if loss == "gspo":
        mask = np.zeros(n, dtype=np.float32)
        mask[start:] = 1.0
        inputs["sequence_ratio_mask"] = mask
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs=inputs)


def corpus(n: int, length: int, seed: int, vocab: int = 256) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=length).tolist() for _ in range(n)]


def train_client(service: tinker.ServiceClient, rank: int = 8, seed: int = 0, base: str = TINY) -> tinker.TrainingClient:
    return service.create_lora_training_client(base_model=base, rank=rank, seed=seed).result()


def adapter_of(mock: object, model_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Copy of a live model's LoRA weights (reads server state, test-only)."""
    st = mock.state  # type: ignore[attr-defined]
    tr = st.models[model_id].trainer
    assert tr is not None, "the model is spilled to disk (more live models than max_resident)"
    return tr.adapter.A.copy(), tr.adapter.B.copy()

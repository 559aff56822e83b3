"""The mock model really learns: supervised cross-entropy and an importance-sampling RL loop."""

from __future__ import annotations

import numpy as np
import pytest
from mock_helpers import ce_datum, rl_datum, train_client
from tinker import types

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONVERSATIONS = [
    "User: hi\nAssistant: hello! how can I help?",
    "User: 2+2?\nAssistant: 4",
    "User: capital of France?\nAssistant: Paris",
    "User: say a color\nAssistant: blue",
    "User: name a fruit\nAssistant: apple",
    "User: thanks\nAssistant: you're welcome",
    "User: what is up?\nAssistant: the sky",
    "User: count to 3\nAssistant: 1 2 3",
    "User: opposite of hot\nAssistant: cold",
    "User: bye\nAssistant: goodbye!",
]


def _datum(text: str) -> types.Datum:
    toks = list(text.encode())
    prompt_len = text.index("Assistant:") + len("Assistant:")
    weights = [0.0 if i + 1 < prompt_len else 1.0 for i in range(len(toks) - 1)]
    return ce_datum(toks, weights)


def test_cross_entropy_halves_in_30_steps(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, rank=16, seed=0)
    data = [_datum(c) for c in CONVERSATIONS]
    adam = types.AdamParams(learning_rate=2e-2)
    losses = []
    for _ in range(30):
        out = tc.forward_backward(data, "cross_entropy").result()
        losses.append(out.metrics["loss:sum"])
        tc.optim_step(adam).result()
    final = tc.forward(data, "cross_entropy").result().metrics["loss:sum"]
    assert final <= 0.5 * losses[0], (losses[0], final)


def test_importance_sampling_raises_reward(tinker_mock):
    """Toy reward: the fraction of emitted tokens that are even ids (about 0.5 at the start);
    importance sampling with mean-centred advantages must push it clearly up."""
    service = tinker_mock.service_client()
    tc = train_client(service, rank=8, seed=1)
    prompt = [1, 2, 3]
    adam = types.AdamParams(learning_rate=5e-2)

    def rollout(step: int) -> tuple[float, list[types.Datum]]:
        sampler = tc.save_weights_and_get_sampling_client().result()
        res = sampler.sample(types.ModelInput.from_ints(prompt), 16,
                             types.SamplingParams(max_tokens=4, seed=step, stop=[])).result()
        rewards = np.array([np.mean([t % 2 == 0 for t in s.tokens]) for s in res.sequences])
        adv = rewards - rewards.mean()
        data = [rl_datum(prompt, list(s.tokens), list(s.logprobs), float(a), "importance_sampling")
                for s, a in zip(res.sequences, adv)]
        return float(rewards.mean()), data

    history = []
    for step in range(20):
        mean_reward, data = rollout(step)
        history.append(mean_reward)
        tc.forward_backward(data, "importance_sampling").result()
        tc.optim_step(adam).result()
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    assert last >= first + 0.25 and last >= 0.8, history

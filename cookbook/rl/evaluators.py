"""Sampling-client evaluators (tinker-cookbook ``SamplingClientEvaluator``): called with the current sampling
client at a loop's evaluation steps, they return metrics that join that step's row.

:class:`ProblemEvaluator` rolls out every environment of a fixed, held-out set of problem groups once
(one sample per problem, seeded by ``(seed, -1, index)`` so evaluations never share seeds with training) and
reports the mean of each environment metric (``{name}/correct``, ``{name}/format``) and of the reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cookbook.rl.rollouts import TinkerTokenCompleter, rollout_groups
from cookbook.rl.types import EnvGroupBuilder


class ProblemEvaluator:
    def __init__(self, builders: Sequence[EnvGroupBuilder], max_tokens: int, name: str = "test",
                 temperature: float = 1.0, seed: int = 0, max_concurrency: int = 64):
        self.builders = list(builders)
        self.max_tokens, self.name, self.temperature = max_tokens, name, temperature
        self.seed, self.max_concurrency = seed, max_concurrency

    async def __call__(self, sampling_client: Any) -> dict[str, float]:
        policy = TinkerTokenCompleter(sampling_client, self.max_tokens, self.temperature)
        groups = await rollout_groups(self.builders, policy, self.max_concurrency, seed_key=(self.seed, -1),
                                      where=f"evaluator {self.name}: ")
        rewards = [r for g in groups for r in g.total_rewards()]
        values: dict[str, list[float]] = {}
        for g in groups:
            for traj in g.trajectories:
                for tr in traj.transitions:
                    for k, v in tr.metrics.items():
                        values.setdefault(k, []).append(float(v))
        out = {f"{self.name}/{k}": float(np.mean(v)) for k, v in values.items()}
        out[f"{self.name}/reward"] = float(np.mean(rewards)) if rewards else float("nan")
        return out

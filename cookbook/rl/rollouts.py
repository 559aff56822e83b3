"""Rollouts: a Tinker sampling client as a policy, single rollouts and group rollouts.

A failing environment or sampler fails the group with a :class:`~cookbook.errors.TrainingError` naming the
group and the environment (never a silent hang): every rollout runs inside ``asyncio.gather`` and the first
exception propagates after the other rollouts of the group are cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cookbook.errors import TrainingError
from cookbook.rl.types import (
    EnvGroupBuilder,
    StopCondition,
    TokenCompleter,
    TokensWithLogprobs,
    Trajectory,
    TrajectoryGroup,
    Transition,
)


class TinkerTokenCompleter:
    """One ``sample`` call per turn (``num_samples=1``), returning tokens and their sampled logprobs."""

    def __init__(self, sampling_client: Any, max_tokens: int, temperature: float = 1.0, seed: int | None = None):
        self.sampling_client = sampling_client
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self._calls = 0

    async def __call__(self, ob: Any, stop: StopCondition) -> TokensWithLogprobs:
        import tinker

        seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        params = tinker.SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, stop=stop, seed=seed)
        result = await self.sampling_client.sample(prompt=ob, num_samples=1, sampling_params=params)
        seq = result.sequences[0]
        if seq.logprobs is None:
            raise TrainingError("the sampler returned no logprobs; RL needs the sampled-token logprobs")
        return TokensWithLogprobs(list(seq.tokens), list(seq.logprobs), "length" if seq.stop_reason == "length" else "stop")


async def run_rollout(policy: TokenCompleter, env: Any, max_turns: int = 64) -> Trajectory:
    """Observe, sample, step, until the environment says the episode is done (or ``max_turns``)."""
    ob, stop = await env.initial_observation()
    transitions: list[Transition] = []
    for _ in range(max_turns):
        ac = await policy(ob, stop)
        step = await env.step(ac.tokens)
        transitions.append(Transition(ob, ac, step.reward, step.episode_done, dict(step.metrics)))
        ob, stop = step.next_observation, step.next_stop_condition
        if step.episode_done:
            break
    return Trajectory(transitions, ob)


async def do_group_rollout(builder: EnvGroupBuilder, policy: TokenCompleter, group_index: int = 0) -> TrajectoryGroup:
    envs = await builder.make_envs()

    async def one(i: int) -> Trajectory:
        try:
            return await run_rollout(policy, envs[i])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise TrainingError(
                f"rollout {i} of group {group_index} ({type(builder).__name__}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    trajectories = list(await asyncio.gather(*(one(i) for i in range(len(envs)))))
    rewards = await builder.compute_group_rewards(trajectories, envs)
    return TrajectoryGroup(trajectories, [r for r, _ in rewards], [m for _, m in rewards])


async def rollout_groups(
    builders: Sequence[EnvGroupBuilder], policy: TokenCompleter, max_concurrency: int = 64
) -> list[TrajectoryGroup]:
    """All groups concurrently (bounded); the first failure cancels the rest and propagates."""
    sem = asyncio.Semaphore(max_concurrency)

    async def bounded(i: int, b: EnvGroupBuilder) -> TrajectoryGroup:
        async with sem:
            return await do_group_rollout(b, policy, i)

    tasks = [asyncio.ensure_future(bounded(i, b)) for i, b in enumerate(builders)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

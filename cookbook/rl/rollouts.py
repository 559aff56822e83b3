"""Rollouts: a Tinker sampling client as a policy, group rollouts with one sampling request per shared prompt.

Group rollout (:func:`do_group_rollout`, pinned by ``specs/loops/rl.yaml`` rules R6-R7): the ``G``
environments of a group advance turn by turn. At each turn the active rollouts are clustered by identical
observation (tokens and stop condition); each cluster is **one** sampling request with
``num_samples = len(cluster)``. A single-turn group whose environments share a prompt (every problem
environment) is therefore one request of ``G`` samples, not ``G`` requests of one. The ``k``-th returned
sequence goes to the ``k``-th rollout of the cluster (ascending rollout index).

Seeds: with a ``seed_key`` (the RL loop passes ``(run seed, step, group)``), the request of turn ``t`` whose
lowest rollout index is ``r`` has seed ``derive_seed(*seed_key, t, r)``, so what a group samples is a function
of the weights and that key only (a resumed run samples what the uninterrupted run sampled). Without a key the
request is unseeded.

A failing environment or sampler fails the group with a :class:`~cookbook.errors.TrainingError` naming the
group, the rollout and the environment (never a silent hang): the first exception propagates after the other
requests of the group are cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

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


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers: ``sha256(":".join(parts))[:4]`` little-endian, masked to 31 bits."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class GroupCompleter(Protocol):
    """A policy that samples ``num_samples`` completions of one observation in one call."""

    async def sample_group(self, ob: Any, stop: StopCondition, num_samples: int, seed: int | None) -> list[TokensWithLogprobs]: ...


class TinkerTokenCompleter:
    """A Tinker sampling client as a policy: ``sample_group`` is one ``sample`` request with ``num_samples``;
    calling it (the :class:`~cookbook.rl.types.TokenCompleter` protocol) samples one completion. At most
    ``semaphore``'s value requests are in flight when one is given."""

    def __init__(self, sampling_client: Any, max_tokens: int, temperature: float = 1.0, seed: int | None = None,
                 semaphore: asyncio.Semaphore | None = None):
        self.sampling_client = sampling_client
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.semaphore = semaphore
        self._calls = 0

    async def sample_group(self, ob: Any, stop: StopCondition, num_samples: int, seed: int | None) -> list[TokensWithLogprobs]:
        import tinker

        params = tinker.SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, stop=stop, seed=seed)
        if self.semaphore is not None:
            async with self.semaphore:
                result = await self.sampling_client.sample(prompt=ob, num_samples=num_samples, sampling_params=params)
        else:
            result = await self.sampling_client.sample(prompt=ob, num_samples=num_samples, sampling_params=params)
        if len(result.sequences) != num_samples:
            raise TrainingError(f"the sampler returned {len(result.sequences)} sequences for num_samples={num_samples}")
        out = []
        for seq in result.sequences:
            if seq.logprobs is None:
                raise TrainingError("the sampler returned no logprobs; RL needs the sampled-token logprobs")
            out.append(TokensWithLogprobs(list(seq.tokens), list(seq.logprobs),
                                          "length" if seq.stop_reason == "length" else "stop"))
        return out

    async def __call__(self, ob: Any, stop: StopCondition) -> TokensWithLogprobs:
        seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        return (await self.sample_group(ob, stop, 1, seed))[0]


class _OneByOne:
    """A :class:`TokenCompleter` (one completion per call) seen as a :class:`GroupCompleter`."""

    def __init__(self, policy: TokenCompleter):
        self.policy = policy

    async def sample_group(self, ob: Any, stop: StopCondition, num_samples: int, seed: int | None) -> list[TokensWithLogprobs]:
        return [await self.policy(ob, stop) for _ in range(num_samples)]


def as_group_completer(policy: TokenCompleter | GroupCompleter) -> GroupCompleter:
    return policy if hasattr(policy, "sample_group") else _OneByOne(policy)  # type: ignore[arg-type, return-value]


def _ob_key(ob: Any, stop: Any) -> Any:
    try:
        toks: Any = tuple(ob.to_ints())
    except Exception:  # image chunks: compare the whole model input
        toks = ob.model_dump_json() if hasattr(ob, "model_dump_json") else repr(ob)
    return toks, tuple(stop)


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


async def _gather_or_cancel(coros: Sequence[Any]) -> list[Any]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def do_group_rollout(
    builder: EnvGroupBuilder,
    policy: TokenCompleter | GroupCompleter,
    group_index: int = 0,
    *,
    seed_key: Sequence[int] | None = None,
    max_turns: int = 64,
    where: str = "",
) -> TrajectoryGroup:
    """The group's trajectories and rewards (see the module docstring for requests and seeds)."""
    sampler = as_group_completer(policy)
    envs = list(await builder.make_envs())
    name = type(builder).__name__

    def fail(i: int, exc: BaseException) -> TrainingError:
        return TrainingError(f"{where}rollout {i} of group {group_index} ({name}) failed: {type(exc).__name__}: {exc}")

    async def guarded(i: int, coro: Any) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except TrainingError:
            raise
        except Exception as exc:
            raise fail(i, exc) from exc

    obs = await _gather_or_cancel([guarded(i, e.initial_observation()) for i, e in enumerate(envs)])
    transitions: list[list[Transition]] = [[] for _ in envs]
    final_obs: list[Any] = [ob for ob, _ in obs]
    active = list(range(len(envs)))
    for turn in range(max_turns):
        if not active:
            break
        clusters: dict[Any, list[int]] = {}
        for i in active:
            clusters.setdefault(_ob_key(*obs[i]), []).append(i)
        members = list(clusters.values())

        async def request(idx: list[int], turn: int = turn) -> list[TokensWithLogprobs]:
            seed = None if seed_key is None else derive_seed(*seed_key, turn, idx[0])
            ob, stop = obs[idx[0]]
            return await sampler.sample_group(ob, stop, len(idx), seed)

        results = await _gather_or_cancel([guarded(idx[0], request(idx)) for idx in members])
        actions = {i: ac for idx, acs in zip(members, results) for i, ac in zip(idx, acs)}
        steps = await _gather_or_cancel([guarded(i, envs[i].step(actions[i].tokens)) for i in active])
        still = []
        for i, step in zip(active, steps):
            transitions[i].append(Transition(obs[i][0], actions[i], step.reward, step.episode_done, dict(step.metrics)))
            final_obs[i] = step.next_observation
            if not step.episode_done:
                obs[i] = (step.next_observation, step.next_stop_condition)
                still.append(i)
        active = still
    trajectories = [Trajectory(t, ob) for t, ob in zip(transitions, final_obs)]
    rewards = await builder.compute_group_rewards(trajectories, envs)
    return TrajectoryGroup(trajectories, [r for r, _ in rewards], [m for _, m in rewards])


async def rollout_groups(
    builders: Sequence[EnvGroupBuilder],
    policy: TokenCompleter | GroupCompleter,
    max_concurrency: int = 64,
    *,
    seed_key: Sequence[int] | None = None,
    where: str = "",
) -> list[TrajectoryGroup]:
    """All groups concurrently (at most ``max_concurrency`` groups at once); group ``g`` gets the seed key
    ``(*seed_key, g)``. The first failure cancels the rest and propagates."""
    sem = asyncio.Semaphore(max_concurrency)

    async def bounded(i: int, b: EnvGroupBuilder) -> TrajectoryGroup:
        async with sem:
            key = None if seed_key is None else (*seed_key, i)
            return await do_group_rollout(b, policy, i, seed_key=key, where=where)

    return await _gather_or_cancel([bounded(i, b) for i, b in enumerate(builders)])

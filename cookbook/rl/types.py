"""RL types: token completions, environments, transitions, trajectories and groups.

These mirror tinker-cookbook's ``rl/types.py`` semantics (single-use environments, group builders that make
``G`` environments for one problem, total reward = sum of step rewards + the group's final reward).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cookbook.errors import DataError

Action = list[int]
StopCondition = list[str] | list[int]
Metrics = dict[str, float]


@dataclass(frozen=True)
class TokensWithLogprobs:
    """A sampled completion: tokens (stop token included) and the sampler's logprob of each token."""

    tokens: list[int]
    maybe_logprobs: list[float] | None
    stop_reason: Literal["stop", "length"] = "stop"

    @property
    def logprobs(self) -> list[float]:
        if self.maybe_logprobs is None:
            raise DataError("this completion has no sampled logprobs; the sampler must return them for RL")
        return self.maybe_logprobs


@dataclass
class StepResult:
    reward: float
    episode_done: bool
    next_observation: Any  # tinker.ModelInput
    next_stop_condition: StopCondition
    metrics: Metrics = field(default_factory=dict)


@dataclass
class Transition:
    ob: Any  # tinker.ModelInput
    ac: TokensWithLogprobs
    reward: float
    episode_done: bool
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True)
class Trajectory:
    transitions: list[Transition]
    final_ob: Any


@dataclass
class TrajectoryGroup:
    """The ``G`` trajectories of one problem, with the group-level final rewards."""

    trajectories: list[Trajectory]
    final_rewards: list[float]
    metrics: list[Metrics] = field(default_factory=list)

    def total_rewards(self) -> list[float]:
        """Per trajectory: the sum of its step rewards plus its final (group) reward."""
        return [sum(t.reward for t in traj.transitions) + fr for traj, fr in zip(self.trajectories, self.final_rewards)]


class Env(ABC):
    """A single-use environment."""

    @abstractmethod
    async def initial_observation(self) -> tuple[Any, StopCondition]: ...

    @abstractmethod
    async def step(self, action: Action) -> StepResult: ...


class EnvGroupBuilder(ABC):
    """Makes the environments of one group (usually ``G`` copies of one problem)."""

    @abstractmethod
    async def make_envs(self) -> Sequence[Env]: ...

    async def compute_group_rewards(self, trajectories: list[Trajectory], envs: Sequence[Env]) -> list[tuple[float, Metrics]]:
        return [(0.0, {}) for _ in trajectories]

    def logging_tags(self) -> list[str]:
        return []


class RLDataset(Protocol):
    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]: ...

    def __len__(self) -> int: ...


class TokenCompleter(Protocol):
    """A policy: observation + stop condition -> sampled tokens with logprobs."""

    async def __call__(self, ob: Any, stop: StopCondition) -> TokensWithLogprobs: ...

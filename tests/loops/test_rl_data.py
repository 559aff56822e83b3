"""RL datum assembly, problem environments and rollouts (scripted policies, no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tinker

from cookbook.errors import TrainingError
from cookbook.renderers import get_renderer
from cookbook.rl.data import assemble_training_data, remove_mask, split_list, trajectory_to_data
from cookbook.rl.envs import ArithmeticDataset, arithmetic_env, math_env
from cookbook.rl.rollouts import do_group_rollout, rollout_groups
from cookbook.rl.types import Env, StepResult, TokensWithLogprobs, Trajectory, TrajectoryGroup, Transition


def _t(ob: list[int], ac: list[int], metrics: dict[str, float] | None = None) -> Transition:
    return Transition(
        tinker.ModelInput.from_ints(ob), TokensWithLogprobs(ac, [-0.5] * len(ac)), 0.0, False, metrics or {}
    )


def test_single_turn_shift_and_masks() -> None:
    (d,) = trajectory_to_data(Trajectory([_t([1, 2, 3], [4, 5])], None), 2.0)
    assert d.model_input.to_ints() == [1, 2, 3, 4]
    li = d.loss_fn_inputs
    assert li["target_tokens"].data == [2, 3, 4, 5]
    assert li["logprobs"].data == [0.0, 0.0, -0.5, -0.5]
    assert li["advantages"].data == [0.0, 0.0, 2.0, 2.0]
    assert li["mask"].data == [0.0, 0.0, 1.0, 1.0]
    assert "mask" not in remove_mask(d).loss_fn_inputs


def test_multi_turn_merges_when_observations_extend() -> None:
    traj = Trajectory([_t([1, 2], [3]), _t([1, 2, 3, 9], [4])], None)
    (d,) = trajectory_to_data(traj, 1.0)
    assert [*d.model_input.to_ints(), d.loss_fn_inputs["target_tokens"].data[-1]] == [1, 2, 3, 9, 4]
    assert d.loss_fn_inputs["mask"].data == [0.0, 1.0, 0.0, 1.0]


def test_multi_turn_splits_when_history_is_rewritten() -> None:
    traj = Trajectory([_t([1, 2], [3]), _t([1, 7, 3], [4])], None)
    data = trajectory_to_data(traj, 1.0)
    assert len(data) == 2
    assert data[1].model_input.to_ints() == [1, 7, 3]


def test_parse_error_masked_turn_gets_no_advantage() -> None:
    (d,) = trajectory_to_data(Trajectory([_t([1, 2], [3, 4], {"parse_error_masked": 1.0})], None), 5.0)
    assert d.loss_fn_inputs["advantages"].data == [0.0, 0.0, 0.0]
    assert d.loss_fn_inputs["mask"].data == [0.0, 0.0, 0.0]


def test_assemble_checks_counts() -> None:
    g = TrajectoryGroup([Trajectory([_t([1, 2], [3])], None)] * 2, [0.0, 0.0])
    data, meta = assemble_training_data([g], [[1.0, -1.0]])
    assert len(data) == 2 and meta == [{"group_idx": 0, "traj_idx": 0}, {"group_idx": 0, "traj_idx": 1}]
    with pytest.raises(ValueError, match="2 trajectories but 1 advantages"):
        assemble_training_data([g], [[1.0]])


def test_split_list_follows_the_code_not_the_upstream_docstring() -> None:
    assert split_list([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4, 5]]
    assert split_list([1, 2], 5) == [[1], [2]]


@pytest.fixture(scope="module")
def llama() -> Any:
    return get_renderer("llama3", "meta-llama/Llama-3.1-8B-Instruct")


def _step(env: Any, text: str, renderer: Any, stop: bool = True) -> StepResult:
    toks = renderer.enc.encode(text) + ([renderer.eot] if stop else [])
    return asyncio.run(env.step(toks))


@pytest.mark.parametrize(
    ("text", "stop", "reward"),
    [("The answer is 12", True, 1.0), ("12", False, 0.9), ("13", True, 0.0), ("13", False, -0.1)],
)
def test_arithmetic_rewards(llama: Any, text: str, stop: bool, reward: float) -> None:
    env = arithmetic_env(llama, 5, 7)
    assert _step(env, text, llama, stop).reward == pytest.approx(reward)


def test_math_env_needs_a_boxed_answer(llama: Any) -> None:
    env = math_env(llama, "What is 1/2 + 1/4?", "\\frac{3}{4}")
    assert _step(env, "So \\boxed{0.75}", llama).reward == pytest.approx(1.0)
    assert _step(env, "0.75", llama).reward == pytest.approx(-0.1)


def test_arithmetic_dataset_is_seeded_and_groups_share_a_problem(llama: Any) -> None:
    ds = ArithmeticDataset(llama, batch_size=3, group_size=4, n_batches=2)
    envs = asyncio.run(ds.get_batch(0)[0].make_envs())
    assert len(envs) == 4 and len({e.question for e in envs}) == 1  # type: ignore[attr-defined]
    again = asyncio.run(ArithmeticDataset(llama, 3, 4, 2).get_batch(0)[0].make_envs())
    assert again[0].question == envs[0].question  # type: ignore[attr-defined]


class _Scripted:
    def __init__(self, tokens: list[int]):
        self.tokens = tokens

    async def __call__(self, ob: Any, stop: Any) -> TokensWithLogprobs:
        return TokensWithLogprobs(self.tokens, [-1.0] * len(self.tokens))


def test_group_rollout_with_a_scripted_policy(llama: Any) -> None:
    ds = ArithmeticDataset(llama, batch_size=2, group_size=3, n_batches=1)
    policy = _Scripted([*llama.enc.encode("0"), llama.eot])
    groups = asyncio.run(rollout_groups(ds.get_batch(0), policy))
    assert [len(g.trajectories) for g in groups] == [3, 3]
    assert all(r in (0.0, 1.0) for g in groups for r in g.total_rewards())


class _Crashing(Env):
    async def initial_observation(self) -> Any:
        return tinker.ModelInput.from_ints([1]), [2]

    async def step(self, action: list[int]) -> StepResult:
        raise RuntimeError("tool sandbox died")


def test_a_crashing_env_fails_the_group_with_a_clear_error() -> None:
    from cookbook.rl.envs import ProblemGroupBuilder

    builder = ProblemGroupBuilder(_Crashing, 4)

    async def run() -> None:
        await asyncio.wait_for(do_group_rollout(builder, _Scripted([1]), group_index=7), timeout=30)

    with pytest.raises(TrainingError, match=r"group 7 .*RuntimeError: tool sandbox died"):
        asyncio.run(run())

"""tool_use_rl: the calculator tool, the multi-turn environment, merging into one datum, and learning offline."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from subprocess_env import ENV

from cookbook.mock.tiny_chat import TINY_CHAT_TOOLS, tiny_chat_dir
from cookbook.renderers import get_renderer
from cookbook.rl.data import trajectory_to_data
from cookbook.rl.tool_env import CalculatorEnv, calculate
from cookbook.rl.types import TokensWithLogprobs, Trajectory, Transition
from cookbook.runlog import RunLog


@pytest.fixture(scope="module")
def renderer() -> Any:
    return get_renderer("qwen3_instruct", str(tiny_chat_dir(model=TINY_CHAT_TOOLS)))


@pytest.mark.parametrize(("expr", "value"), [("6 * 7", "42"), ("2 + 3 * (4 - 1)", "11"), ("-5 - -2", "-3")])
def test_calculator_computes(expr: str, value: str) -> None:
    assert calculate(expr) == value == str(eval(expr))  # Python's own arithmetic is the oracle


@pytest.mark.parametrize("expr", ["__import__('os')", "2 ** 99999", "1 / 0", "x + 1", "9" * 300, "10**13 * 10"])
def test_calculator_refuses_without_raising(expr: str) -> None:
    assert calculate(expr).startswith("error")


def _call(name: str, args: dict[str, Any]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def _episode(renderer: Any, responses: list[str], x: int = 6, op: str = "*", y: int = 7,
             max_turns: int = 3) -> tuple[Trajectory, list[Any]]:
    """Drive one CalculatorEnv with fixed responses; returns the trajectory and the step results."""
    env = CalculatorEnv(renderer, x, op, y, max_turns=max_turns)
    stop = renderer.get_stop_sequences()

    async def run() -> tuple[Trajectory, list[Any]]:
        ob, _ = await env.initial_observation()
        transitions, results = [], []
        for text in responses:
            ac = renderer.enc.encode(text) + list(stop)
            res = await env.step(ac)
            transitions.append(Transition(ob, TokensWithLogprobs(ac, [-1.0] * len(ac)), res.reward, res.episode_done,
                                          res.metrics))
            results.append(res)
            ob = res.next_observation
            if res.episode_done:
                break
        return Trajectory(transitions, ob), results

    return asyncio.run(run())


def test_tool_call_then_answer_is_rewarded_and_merged_into_one_datum(renderer: Any) -> None:
    traj, results = _episode(renderer, [_call("calculator", {"expression": "6 * 7"}), "42"])
    assert [r.episode_done for r in results] == [False, True]
    # the tool result goes back as a tool message, rendered the renderer's way
    second_ob = renderer.decode(traj.transitions[1].ob.to_ints())
    assert second_ob.endswith("<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert results[1].reward == 1.0
    assert results[1].metrics == {"correct": 1.0, "format": 1.0, "used_tool": 1.0, "tool_calls": 1.0, "turns": 2.0}
    # observation 2 extends observation 1 + the sampled call: one datum; sampled tokens trained, tool result not
    data = trajectory_to_data(traj, advantage=0.5)
    assert len(data) == 1
    mask = data[0].loss_fn_inputs["mask"].tolist()
    n_ac = [len(t.ac.tokens) for t in traj.transitions]
    ob1 = traj.transitions[1].ob.length
    assert sum(mask) == sum(n_ac)
    assert mask[ob1 - 1:] == [1.0] * n_ac[1]  # the answer turn (targets are shifted by one)
    assert sum(mask[traj.transitions[0].ob.length - 1: ob1 - 1]) == n_ac[0]


def test_answer_without_the_tool_costs_the_tool_bonus(renderer: Any) -> None:
    _, results = _episode(renderer, ["42"])
    assert results[-1].reward == pytest.approx(1.0 - 0.5)
    assert results[-1].metrics["used_tool"] == 0.0


def test_a_bad_expression_is_a_tool_error_the_model_sees(renderer: Any) -> None:
    traj, results = _episode(renderer, [_call("calculator", {"expression": "6 ^ 7"}), "42"])
    assert "error" in renderer.decode(traj.transitions[1].ob.to_ints()).rsplit("<tool_response>", 1)[1]
    assert results[0].metrics == {"tool_call_ok": 0.0}
    assert results[1].metrics["used_tool"] == 0.0 and results[1].metrics["format"] == 1.0


def test_unparsable_call_and_running_out_of_turns_are_format_failures(renderer: Any) -> None:
    _, results = _episode(renderer, ['<tool_call>\n{"name": "calculator", "arguments": 7}\n</tool_call>'])
    assert results[-1].episode_done and results[-1].metrics["format"] == 0.0
    call = _call("calculator", {"expression": "6 * 7"})
    _, results = _episode(renderer, [call, call], max_turns=2)
    assert results[-1].episode_done and results[-1].metrics["format"] == 0.0
    # a call with no answer after it is not tool use: both penalties (0.1 format, 0.5 tool)
    assert results[-1].metrics["used_tool"] == 0.0
    assert results[-1].reward == pytest.approx(-0.1 - 0.5)


def test_a_non_canonical_call_is_not_merged(renderer: Any) -> None:
    """The re-rendered history differs from the sampled tokens: the next observation does not extend them."""
    raw = '<tool_call>\n{"name":"calculator","arguments":{"expression":"6*7"}}\n</tool_call>'
    traj, results = _episode(renderer, [raw, "42"])
    assert results[-1].reward == 1.0
    assert len(trajectory_to_data(traj, advantage=1.0)) == 2


def test_a_problem_pool_keeps_every_batch_to_its_problems(renderer: Any) -> None:
    from cookbook.rl.tool_env import CalculatorDataset

    def problems(ds: CalculatorDataset, index: int) -> list[tuple[Any, ...]]:
        return [tuple(g.env_thunk.args[1:4]) for g in ds.get_batch(index)]  # type: ignore[attr-defined]

    pooled = CalculatorDataset(renderer, batch_size=16, group_size=2, n_batches=4, max_operand=99, n_problems=2)
    pool = pooled.pool()
    assert len(pool) == 2
    assert all(p in pool for i in range(4) for p in problems(pooled, i))
    assert problems(pooled, 3) == problems(pooled, 3)  # seeded
    free = CalculatorDataset(renderer, batch_size=16, group_size=2, n_batches=4, max_operand=99)
    assert len({p for i in range(4) for p in problems(free, i)}) > 2


def test_the_recipe_is_registered() -> None:
    from cookbook.recipes import RECIPES

    assert RECIPES["tool_use_rl"] == "cookbook.recipes.tool_use_rl"


@pytest.mark.e2e
def test_tool_use_rl_learns_to_use_the_calculator(tmp_path: Path) -> None:
    """The offline defaults (seeded, so the run is deterministic): one problem sized for the toy model, reward
    only for a calculator call followed by the correct answer. Margins (first 3 vs last 3 of 12 steps) as
    measured at seed 0: correct 0.14 -> 0.91, reward -0.57 -> 0.35, used_tool 0.29 -> 0.45."""
    out = subprocess.run([sys.executable, "-m", "cookbook.recipes.tool_use_rl", f"log_path={tmp_path}"],
                         env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = RunLog(tmp_path).metrics()
    assert len(rows) == 12

    def mean(key: str, part: slice) -> float:
        vals = [float(r[key]) for r in rows[part]]
        return sum(vals) / len(vals)

    first, last = slice(0, 3), slice(-3, None)
    # the answer is learned from the reward alone (the warm-up's worked examples are other problems)
    assert mean("env/all/correct", last) > mean("env/all/correct", first) + 0.5, rows
    assert mean("env/all/reward/total", last) > mean("env/all/reward/total", first) + 0.6, rows
    # ... and reached through the tool: a third of the episodes at least still call it, then answer
    assert mean("env/all/used_tool", last) > 0.3, rows
    # most episodes were trained as a single datum (their observations extended the previous turn)
    episodes = sum(r["env/all/total_episodes"] for r in rows)
    datums = sum(r["optim/num_datums"] for r in rows)
    assert episodes <= datums < 1.5 * episodes
    groups = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    calls = [t["message"].get("tool_calls") for g in groups for r in g["rollouts"] for t in r["turns"]]
    assert any(c and c[0]["name"] == "calculator" for c in calls)
    assert (tmp_path / "report.html").exists() and (tmp_path / "warmup" / "metrics.jsonl").exists()

"""Training loops end to end on the mock, through the real SDK: learning and crashing workers (kill-and-resume of
every recipe and RL mode: tests/loops/test_kill_resume.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from subprocess_env import ENV

from cookbook.errors import TrainingError
from cookbook.runlog import RunLog

pytestmark = pytest.mark.e2e



def _nll_by_step(log_path: Path) -> dict[int, float]:
    return {r["step"]: r["train_mean_nll"] for r in RunLog(log_path).metrics() if "train_mean_nll" in r}


def _run_recipe(module: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_sl_basic_nll_falls_and_the_summary_says_where_things_are(tmp_path: Path) -> None:
    out = _run_recipe("cookbook.recipes.sl_basic", [f"log_path={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    nll = _nll_by_step(tmp_path)
    first, last = nll[min(nll)], nll[max(nll)]
    assert last < 0.7 * first, (first, last)
    assert f"metrics:     {tmp_path}/metrics.jsonl" in out.stdout
    assert (tmp_path / "report.html").exists() and (tmp_path / "config.json").exists()
    last_ckpt = RunLog(tmp_path).last_checkpoint()
    assert last_ckpt is not None and last_ckpt["name"] == "final" and last_ckpt["final"] is True


class _CrashingBuilder:
    def __init__(self, inner: Any, crash: bool):
        self.inner, self.crash = inner, crash

    async def make_envs(self) -> Any:
        envs = list(await self.inner.make_envs())
        if self.crash:
            async def boom(action: list[int]) -> Any:
                raise RuntimeError("rollout worker crashed")

            envs[1].step = boom
        return envs

    async def compute_group_rewards(self, trajectories: Any, envs: Any) -> Any:
        return [(0.0, {}) for _ in trajectories]

    def logging_tags(self) -> list[str]:
        return []


class _CrashAt:
    def __init__(self, inner: Any, step: int):
        self.inner, self.step = inner, step

    def __len__(self) -> int:
        return len(self.inner)

    def get_batch(self, i: int) -> list[Any]:
        return [_CrashingBuilder(b, i == self.step and gi == 2) for gi, b in enumerate(self.inner.get_batch(i))]


@pytest.mark.parametrize("mode", ["sync", "stream", "async"])
def test_a_crashing_rollout_worker_fails_the_run_without_hanging(tinker_mock: Any, tmp_path: Path, mode: str) -> None:
    from cookbook.mock.tiny_chat import TINY_CHAT, tiny_chat_dir
    from cookbook.renderers import get_renderer
    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.train import RLConfig, train_rl

    renderer = get_renderer("llama3", str(tiny_chat_dir()))
    dataset = _CrashAt(ArithmeticDataset(renderer, 4, 3, 6), step=2)
    cfg = RLConfig(log_path=str(tmp_path), model_name=TINY_CHAT, renderer_name="llama3", mode=mode,  # type: ignore[arg-type]
                   max_tokens=4, save_every=0)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            train_rl(cfg, tinker_mock.service_client(), dataset, renderer)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), f"{mode}: the run hangs after a rollout worker crashed"
    assert errors and isinstance(errors[0], TrainingError), errors
    assert "group 2" in str(errors[0]) and "rollout worker crashed" in str(errors[0])
    assert [r["step"] for r in RunLog(tmp_path).metrics()] == [0, 1]


def test_rl_basic_reward_rises(tmp_path: Path) -> None:
    out = _run_recipe("cookbook.recipes.rl_basic", [f"log_path={tmp_path}", "lora_rank=8"], timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [r for r in RunLog(tmp_path).metrics() if "env/all/reward/total" in r]
    reward = [r["env/all/reward/total"] for r in rows]
    early, late = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    assert late > early + 0.1, reward
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "rl"

"""SIGKILL at a random step, then the same command again: the metrics equal an uninterrupted run's, for every
recipe and every RL mode (specs/loops/rl.yaml R8). Subprocesses on the embedded mock, through the real SDK.

Every case is ``nox -s resume`` (about 30 s each, three recipe runs); the default suite runs :data:`SUITE`."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from subprocess_env import ENV

from cookbook.runlog import RunLog

pytestmark = pytest.mark.e2e


RL_SMALL = ["n_batches=7", "batch_size=4", "group_size=4", "save_every=2", "lora_rank=8", "eval_every=3", "eval_size=4"]
CASES: dict[str, tuple[str, list[str]]] = {
    "sl_basic": ("sl_basic", ["max_steps=9", "save_every=2", "eval_every=3", "lora_rank=8"]),
    "chat_sl": ("chat_sl", ["max_steps=8", "save_every=3", "eval_every=4", "lora_rank=8"]),
    "rl_sync": ("rl_basic", RL_SMALL),
    "rl_stream": ("rl_basic", [*RL_SMALL, "stream_minibatch_config.num_minibatches=2"]),
    "rl_async": ("rl_basic", [*RL_SMALL, "async_config.max_steps_off_policy=2"]),
    "math_rl": ("math_rl", ["warmup_sft_steps=3", "n_batches=6", "batch_size=4", "group_size=4", "save_every=2",
                            "lora_rank=8", "eval_size=0"]),
    "dpo": ("dpo", ["max_steps=8", "save_every=2", "lora_rank=8", "test_size=4", "eval_every=3"]),
    "distillation": ("distillation", ["teacher_sft_steps=3", "n_batches=6", "batch_size=4", "group_size=2",
                                      "save_every=2", "lora_rank=8"]),
    "distillation_async": ("distillation", ["teacher_sft_steps=3", "n_batches=6", "batch_size=4", "group_size=2",
                                            "save_every=2", "lora_rank=8", "async_config.max_steps_off_policy=1"]),
    # multi-turn episodes (tool calls, tool results, answer) after an SFT warm-up in <log_path>/warmup
    "tool_use_rl": ("tool_use_rl", ["warmup_sft_steps=3", "n_batches=6", "batch_size=4", "group_size=2",
                                    "save_every=2", "lora_rank=8", "max_tokens=48"]),
}


#: the cases of the default suite (``nox -s tests``): an SL recipe and async RL, whose resume carries the most state
#: (in-flight samples, the sampler version); ``nox -s resume`` (``COOKBOOK_RESUME_ALL=1``) runs every case
SUITE = ("sl_basic", "rl_async")
RUN = list(CASES) if os.environ.get("COOKBOOK_RESUME_ALL") == "1" else list(SUITE)


def _cmd(recipe: str, log_path: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", f"cookbook.recipes.{recipe}", f"log_path={log_path}", *args]


def _rows(log_path: Path) -> dict[int, dict[str, Any]]:
    """Every metric but wall-clock times, by step."""
    return {int(r["step"]): {k: v for k, v in r.items() if not k.startswith("time/")} for r in RunLog(log_path).metrics()}


def _train_rows(log_path: Path) -> int:
    if not (log_path / "metrics.jsonl").exists():
        return 0
    return sum(1 for r in RunLog(log_path).metrics() if "progress/done_frac" in r and r["progress/done_frac"] < 1)


@pytest.mark.parametrize("case", RUN)
def test_sigkill_at_a_random_step_then_rerun_equals_the_uninterrupted_run(case: str, tmp_path: Path) -> None:
    recipe, args = CASES[case]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.run(_cmd(recipe, ref_dir, args), env=ENV, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = _rows(ref_dir)
    n_steps = _train_rows(ref_dir)
    kill_after = random.Random(f"{case}:{os.environ.get('PYTEST_XDIST_WORKER', '0')}").randint(2, n_steps - 2)
    proc = subprocess.Popen(_cmd(recipe, run_dir, args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None and _train_rows(run_dir) < kill_after:
            time.sleep(0.05)  # polling the child's files, not synchronising with it
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _train_rows(run_dir) < n_steps
    again = subprocess.run(_cmd(recipe, run_dir, args), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = _rows(run_dir)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == reference[step], f"{case}: step {step} differs after the resume"
    steps = [r["step"] for r in RunLog(run_dir).metrics()]
    assert steps == sorted(set(steps)), "one metrics row per step"

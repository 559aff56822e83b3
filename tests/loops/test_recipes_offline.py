"""The math_rl, dpo, distillation and chat_sl recipes end to end on the embedded mock (subprocesses, real SDK).

Each asserts that the recipe learns (its key metric moves the right way), writes its run files, and — for dpo
and math_rl — that a run resumed from a mid-run checkpoint reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from subprocess_env import ENV

from cookbook.runlog import RunLog

pytestmark = pytest.mark.e2e



def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _series(log_path: Path, key: str) -> list[float]:
    return [float(r[key]) for r in RunLog(log_path).metrics() if isinstance(r.get(key), int | float)]


def _by_step(log_path: Path, key: str) -> dict[int, Any]:
    return {int(r["step"]): r[key] for r in RunLog(log_path).metrics() if key in r}


def _assert_run_files(log_path: Path, out: subprocess.CompletedProcess[str]) -> None:
    for name in ("config.json", "metrics.jsonl", "checkpoints.jsonl", "report.html"):
        assert (log_path / name).exists(), name
    assert f"metrics:     {log_path}/metrics.jsonl" in out.stdout
    assert f"report:      {log_path}/report.html" in out.stdout
    last = RunLog(log_path).last_checkpoint()
    assert last is not None and last["name"] == "final" and last["final"] is True


def _cut_after(log_path: Path, batch: int) -> None:
    """Simulate a crash right after the checkpoint of ``batch``: later checkpoint records vanish
    (metrics rows of later steps stay; the resumed loop must drop them itself)."""
    records = RunLog(log_path).checkpoints()
    kept = [r for r in records if int(r.get("batch", 0)) <= batch and not r.get("final")]
    assert any(r.get("state_path") and r["batch"] == batch for r in kept), records
    (log_path / "checkpoints.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ----------------------------------------------------------------------------------------------- math_rl


def test_math_rl_warms_up_then_reward_rises_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _run(["-m", "cookbook.recipes.math_rl", f"log_path={run}", "lora_rank=8"], timeout=900)
    _assert_run_files(run, out)
    reward = _series(run, "env/all/reward/total")
    assert len(reward) == 20
    assert _mean(reward[-5:]) > _mean(reward[:5]) + 0.1, reward
    fmt = _series(run, "env/all/format")
    assert _mean(fmt[-5:]) > _mean(fmt[:5]) + 0.3, fmt
    warm = RunLog(run / "warmup").last_checkpoint()
    assert warm is not None and warm["final"] is True
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "rl" and config["warmup_sft_steps"] == 16

    # resume: a crash after the step-10 checkpoint, then the same command again
    reference = _by_step(run, "env/all/reward/total")
    _cut_after(run, 10)
    _run(["-m", "cookbook.recipes.math_rl", f"log_path={run}", "lora_rank=8"], timeout=900)
    assert _by_step(run, "env/all/reward/total") == reference
    steps = [r["step"] for r in RunLog(run).metrics()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


# ----------------------------------------------------------------------------------------------- dpo


def test_dpo_starts_at_ln2_learns_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _run(["-m", "cookbook.recipes.dpo", f"log_path={run}"])
    _assert_run_files(run, out)
    rows = RunLog(run).metrics()
    assert abs(rows[0]["dpo_loss"] - math.log(2)) < 1e-6, rows[0]
    assert rows[0]["margin"] == pytest.approx(0.0, abs=1e-6) and rows[0]["accuracy"] == 0.0
    loss, acc = _series(run, "dpo_loss"), _series(run, "accuracy")
    assert _mean(loss[-4:]) < 0.5 * math.log(2), loss
    assert _mean(acc[-4:]) >= 0.9, acc
    for key in ("margin", "chosen_reward", "rejected_reward", "num_pairs"):
        assert key in rows[-1]
    ref = [r for r in RunLog(run).checkpoints() if r["name"] == "reference"]
    assert len(ref) == 1 and ref[0]["sampler_path"].startswith("tinker://") and "state_path" not in ref[0]
    assert json.loads((run / "config.json").read_text())["kind"] == "dpo"

    reference = _by_step(run, "dpo_loss")
    _cut_after(run, 8)
    _run(["-m", "cookbook.recipes.dpo", f"log_path={run}"])
    assert _by_step(run, "dpo_loss") == reference, "a resumed DPO run must equal the uninterrupted one"
    assert len([r for r in RunLog(run).checkpoints() if r["name"] == "reference"]) == 1


def test_dpo_rerun_after_final_does_nothing(tmp_path: Path) -> None:
    _run(["-m", "cookbook.recipes.dpo", f"log_path={tmp_path}", "max_steps=3", "save_every=0"])
    before = (tmp_path / "metrics.jsonl").read_text()
    _run(["-m", "cookbook.recipes.dpo", f"log_path={tmp_path}", "max_steps=3", "save_every=0"])
    assert (tmp_path / "metrics.jsonl").read_text() == before


# ----------------------------------------------------------------------------------------------- distillation


def test_distillation_teacher_kl_falls(tmp_path: Path) -> None:
    out = _run(["-m", "cookbook.recipes.distillation", f"log_path={tmp_path}"])
    _assert_run_files(tmp_path, out)
    kl = _series(tmp_path, "teacher_kl")
    assert len(kl) == 30
    assert _mean(kl[-5:]) < 0.8 * _mean(kl[:5]), kl
    teacher = [r for r in RunLog(tmp_path).checkpoints() if r["name"] == "teacher"]
    assert len(teacher) == 1 and "sampler_path" in teacher[0]
    assert RunLog(tmp_path / "teacher").last_checkpoint() is not None
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kind"] == "on_policy_distillation" and config["teacher_kl_coef"] == 1.0 and config["kl_penalty_coef"] == 0.0


# ----------------------------------------------------------------------------------------------- chat_sl


def test_chat_sl_on_a_jsonl_file_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    rows = []
    for i in range(24):
        a, b = i % 7, (i * 3) % 5
        rows.append({"messages": [
            {"role": "system", "content": "Answer with the number only."},
            {"role": "user", "content": f"{a} plus {b}?"},
            {"role": "assistant", "content": str(a + b)},
        ]})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    out = _run(["-m", "cookbook", "run", "chat_sl", f"log_path={run}", f"dataset={data}", "test_size=4",
                "train_on_what=last_assistant_message", "batch_size=4", "num_epochs=3"])
    _assert_run_files(run, out)
    test_nll = _series(run, "test/nll")
    assert len(test_nll) >= 2 and test_nll[-1] < 0.7 * test_nll[0], test_nll
    config = json.loads((run / "config.json").read_text())
    assert config["train_on_what"] == "last_assistant_message" and config["dataset"] == str(data)


def test_chat_sl_default_bundled_data(tmp_path: Path) -> None:
    out = _run(["-m", "cookbook.recipes.chat_sl", f"log_path={tmp_path}"])
    _assert_run_files(tmp_path, out)
    nll = _series(tmp_path, "train_mean_nll")
    assert nll[-1] < 0.7 * nll[0], nll


def test_a_bad_train_on_what_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cookbook", "run", "chat_sl", f"log_path={tmp_path}",
                          "train_on_what=everything"], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "train_on_what='everything'" in out.stderr and "Traceback" not in out.stderr


def test_the_new_recipes_are_registered() -> None:
    from cookbook.recipes import RECIPES

    for name in ("math_rl", "dpo", "distillation", "chat_sl"):
        assert RECIPES[name] == f"cookbook.recipes.{name}"

"""Bad input and run-directory hygiene: each case gets a clear error and a non-zero exit (never a hang or a
traceback without --debug), checked on real recipe processes (embedded mock, real SDK)."""

from __future__ import annotations

import json
import os
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

SMALL = ["max_steps=3", "save_every=0", "eval_every=0", "lora_rank=4"]


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cookbook", "run", *args], env=env or ENV, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def _failed_cleanly(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode not in (0, None), out.stdout[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _conv(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"{i} plus 1?"}, {"role": "assistant", "content": str(i + 1)}]}


# ----------------------------------------------------------------------------------------------- data


def test_unknown_roles_are_rejected_at_load_with_file_and_line(tmp_path: Path) -> None:
    rows = [_conv(i) for i in range(12)]
    rows[4] = {"messages": [{"role": "human", "content": "hi"}, {"role": "gpt", "content": "hello"}]}
    data = _jsonl(tmp_path / "sharegpt.jsonl", rows)
    out = _run(["sl_basic", f"log_path={tmp_path / 'run'}", f"dataset={data}", "test_size=2", *SMALL])
    _failed_cleanly(out)
    assert f"{data}:5" in out.stderr
    assert not (tmp_path / "run" / "mock_state").exists(), "data errors must come before the service starts"


def test_a_malformed_line_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    rows: list[Any] = [_conv(i) for i in range(12)]
    rows[7] = '{"messages": [{"role": "user", "content": "unterminated'
    data = _jsonl(tmp_path / "broken.jsonl", rows)
    out = _run(["sl_basic", f"log_path={tmp_path / 'run'}", f"dataset={data}", *SMALL])
    _failed_cleanly(out)
    assert f"{data}:8" in out.stderr


def test_a_missing_data_file_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    out = _run(["dpo", f"log_path={tmp_path / 'run'}", f"dataset={missing}", *SMALL])
    _failed_cleanly(out)
    assert str(missing) in out.stderr and len(out.stderr.strip().splitlines()) <= 3


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = _run(["sl_basic", f"log_path={tmp_path / 'run'}", f"dataset={tmp_path / 'nope.jsonl'}", "--debug"])
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_zero_trained_tokens_stops_the_run_naming_the_rows(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}]}
            for i in range(12)]
    data = _jsonl(tmp_path / "no_assistant.jsonl", rows)
    run = tmp_path / "run"
    out = _run(["sl_basic", f"log_path={run}", f"dataset={data}", "test_size=0", *SMALL])
    _failed_cleanly(out)
    assert f"{data}:" in out.stderr
    last = RunLog(run).last_checkpoint()
    assert last is None or not last.get("final"), "a run that trained nothing must not save a final checkpoint"


def test_a_nan_loss_stops_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _run(["sl_basic", f"log_path={run}", "learning_rate=1e30", "max_steps=12", "save_every=0", "eval_every=0",
                "lora_rank=4", "lr_schedule=constant"])
    _failed_cleanly(out)
    last = RunLog(run).last_checkpoint()
    assert last is None or not last.get("final")
    assert "nan" in out.stderr.lower()


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(("recipe", "arg", "suggestion"), [
    ("rl_basic", "mode=asyncc", "'async'"),
    ("sl_basic", "train_on_what=last_assistant_mesage", "'last_assistant_message'"),
    ("dpo", "loss_type=sigmoidd", "'sigmoid'"),
    ("rl_basic", "behavior_if_log_dir_exists=resum", "'resume'"),
    ("rl_basic", "lerning_rate=0.1", "learning_rate"),
])
def test_config_errors_come_before_anything_starts_with_a_suggestion(tmp_path: Path, recipe: str, arg: str,
                                                                      suggestion: str) -> None:
    run = tmp_path / "run"
    out = _run([recipe, f"log_path={run}", arg])
    _failed_cleanly(out)
    assert suggestion in out.stderr
    assert not (run / "mock_state").exists() and not (run / "config.json").exists()


def test_tilde_in_log_path_is_expanded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = _run(["sl_basic", "log_path=~/runs/sl", *SMALL], env={**ENV, "HOME": str(home)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (home / "runs" / "sl" / "metrics.jsonl").exists()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("recipe", ["sl_basic", "chat_sl", "rl_basic", "math_rl", "dpo", "distillation"])
def test_recipe_help_lists_every_key_with_type_and_default(recipe: str) -> None:
    import importlib

    import chz

    out = _run([recipe, "--help"], timeout=120)
    assert out.returncode == 0, out.stderr
    cls = importlib.import_module(f"cookbook.recipes.{recipe}").Config
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    for name, field in chz.chz_fields(cls).items():
        assert name in lines, name
        assert field._doc, f"{recipe}.{name} has no doc"
    assert "async_config.max_steps_off_policy" in lines or recipe in ("sl_basic", "chat_sl", "dpo")


def test_the_banner_names_the_service(tmp_path: Path) -> None:
    out = _run(["sl_basic", f"log_path={tmp_path}", *SMALL])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedded mock" in out.stderr


@pytest.mark.parametrize("how", ["dead_base_url", "bogus_key_no_network"])
def test_an_unreachable_service_fails_fast_with_what_to_check(tmp_path: Path, how: str) -> None:
    env = dict(ENV)
    args = ["sl_basic", f"log_path={tmp_path / 'run'}", *SMALL]
    if how == "dead_base_url":
        args.append("base_url=http://127.0.0.1:9")
    else:
        env.update(TINKER_API_KEY="tml-bogus", TINKER_BASE_URL="http://127.0.0.1:9")
    out = _run(args, env=env, timeout=280)  # the subprocess timeout is the "no 300 s hang" guard
    _failed_cleanly(out)
    assert "127.0.0.1:9" in out.stderr or "TINKER_BASE_URL" in out.stderr


# ----------------------------------------------------------------------------------------------- the run dir


def test_a_second_run_into_a_locked_log_path_fails_naming_the_first(tmp_path: Path) -> None:
    from cookbook.loop import _Lock

    tmp_path.mkdir(exist_ok=True)
    lock = _Lock(tmp_path / ".lock")
    try:
        out = _run(["sl_basic", f"log_path={tmp_path}", *SMALL], timeout=120)
    finally:
        lock.release()
    _failed_cleanly(out)
    assert f"PID {os.getpid()}" in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_behavior_if_log_dir_exists(tmp_path: Path) -> None:
    first = _run(["sl_basic", f"log_path={tmp_path}", *SMALL])
    assert first.returncode == 0, first.stderr[-3000:]
    before = (tmp_path / "metrics.jsonl").read_text()
    _failed_cleanly(_run(["sl_basic", f"log_path={tmp_path}", *SMALL, "behavior_if_log_dir_exists=raise"]))
    assert (tmp_path / "metrics.jsonl").read_text() == before
    again = _run(["sl_basic", f"log_path={tmp_path}", *SMALL, "behavior_if_log_dir_exists=resume"])
    assert again.returncode == 0 and (tmp_path / "metrics.jsonl").read_text() == before  # finished: nothing to do
    fresh = _run(["sl_basic", f"log_path={tmp_path}", *SMALL[:-1], "lora_rank=8", "behavior_if_log_dir_exists=delete"])
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads((tmp_path / "config.json").read_text())["lora_rank"] == 8
    assert len(RunLog(tmp_path).metrics()) == len(before.splitlines())


def test_a_changed_frozen_key_refuses_to_resume_with_a_diff(tmp_path: Path) -> None:
    base = ["sl_basic", f"log_path={tmp_path}", "max_steps=6", "save_every=2", "eval_every=0", "lora_rank=4"]
    assert _run(base).returncode == 0
    out = _run([*base[:-1], "lora_rank=16"])
    _failed_cleanly(out)
    assert "lora_rank" in out.stderr and "4" in out.stderr and "16" in out.stderr
    assert json.loads((tmp_path / "config.json").read_text())["lora_rank"] == 4


def test_ctrl_c_names_the_step_and_the_rerun_resumes(tmp_path: Path) -> None:
    # 40 steps (about 4 s on tiny-chat): the interrupt at step 4 must land while the run is still going
    args = [sys.executable, "-m", "cookbook", "run", "sl_basic", f"log_path={tmp_path}", "max_steps=40",
            "save_every=2", "eval_every=0", "lora_rank=4"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None and len(RunLog(tmp_path).metrics()) < 4 \
                if (tmp_path / "metrics.jsonl").exists() else proc.poll() is None:
            time.sleep(0.05)  # polling the child's files
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "rerun the same command to resume" in err and "step" in err
    assert "Traceback" not in err
    again = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from step" in again.stderr

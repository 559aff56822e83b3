"""Optional W&B logging (the ``wandb`` extra) with ``WANDB_MODE=offline``: no network, a run folder on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from subprocess_env import subprocess_env

pytest.importorskip("wandb", reason="wandb is not installed (optional extra 'wandb')")

from cookbook.loop import opened
from cookbook.runlog import RunLog
from cookbook.wandb_log import WandbLogger

OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
           "WANDB_DISABLE_CODE": "true"}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def _run_dirs(log_path: Path) -> list[Path]:
    return sorted((log_path / "wandb").glob("offline-run-*"))


def test_metrics_rows_are_mirrored_to_an_offline_run(offline: None, tmp_path: Path) -> None:
    log_path = tmp_path / "run"
    spec = {"wandb_project": "cookbook-test", "wandb_name": "unit"}
    with opened(str(log_path), "sl", {"learning_rate": 0.1}, "raise", spec) as opened_run:
        (logger,) = opened_run.log.loggers  # the built-in W&B factory took wandb_project
        assert isinstance(logger, WandbLogger)
        run = logger.run
        for step in range(3):
            opened_run.log.log_metrics(step, {"loss": 1.0 / (step + 1), "tag": "text is skipped", "nan": float("nan")})
        assert run.config["learning_rate"] == 0.1
        # W&B commits a step when the next one arrives (or at finish): the summary holds a logged value,
        # and neither the text value nor the NaN was sent
        assert run.summary["loss"] in (1.0, 0.5, pytest.approx(1 / 3))
        assert "tag" not in run.summary.keys() and "nan" not in run.summary.keys()
    (folder,) = _run_dirs(log_path)
    assert list(folder.glob("run-*.wandb")), list(folder.iterdir())
    # after the run closed its logger is gone: later rows only go to metrics.jsonl
    RunLog(log_path).log_metrics(3, {"loss": 0.1})
    assert len(RunLog(log_path).metrics()) == 4


def test_no_project_means_no_wandb(tmp_path: Path) -> None:
    with opened(str(tmp_path), "sl", {"learning_rate": 0.1}, "raise", {"wandb_project": None}) as run:
        run.log.log_metrics(0, {"loss": 1.0})
        assert run.log.loggers == []
    assert not (tmp_path / "wandb").exists()


@pytest.mark.e2e
def test_a_recipe_with_wandb_project_writes_a_run_folder(tmp_path: Path) -> None:
    env = subprocess_env(**OFFLINE, WANDB_CONFIG_DIR=str(tmp_path / "cfg"), WANDB_CACHE_DIR=str(tmp_path / "cache"))
    log_path = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "cookbook", "run", "sl_basic", f"log_path={log_path}", "max_steps=3", "eval_every=0",
         "save_every=0", "wandb_project=cookbook-test", "wandb_name=sl-offline"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (folder,) = _run_dirs(log_path)
    assert list(folder.glob("run-*.wandb"))
    assert (log_path / "metrics.jsonl").exists()

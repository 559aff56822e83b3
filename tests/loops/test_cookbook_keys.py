"""A tinker-cookbook user's usual keys work on every recipe (same names, shapes and defaults).

Each recipe runs in-process on the embedded mock with tinker-cookbook's key names: ``lora_rank``,
``eval_every``, ``save_every``, ``wandb_project`` / ``wandb_name`` (handed to the logger hook: a test factory
stands in for the W&B logger), ``behavior_if_log_dir_exists``, ``load_checkpoint_path`` (SFT -> RL hand-off),
``async_config.*``, ``stream_minibatch_config.*``, ``compute_post_kl``, ``kl_penalty_coef``; the run files follow
tinker-cookbook's shapes (``sampler_path`` in ``checkpoints.jsonl``, one metrics row per step with
``progress/done_frac``, ``logs.log``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cookbook.runlog import RunLog

pytestmark = pytest.mark.e2e


class _FakeWandb:
    instances: list[_FakeWandb] = []

    def __init__(self, spec: Mapping[str, Any]):
        self.spec, self.rows, self.hparams, self.closed = dict(spec), [], None, False
        _FakeWandb.instances.append(self)

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        self.hparams = dict(config)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.rows.append((step, dict(metrics)))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_FakeWandb]]:
    from cookbook import runlog

    def factory(log_dir: Path, config: Mapping[str, Any], spec: Mapping[str, Any]) -> _FakeWandb | None:
        return _FakeWandb(spec) if spec.get("wandb_project") else None

    monkeypatch.setattr(runlog, "_LOGGER_FACTORIES", [factory])
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    _FakeWandb.instances.clear()
    yield _FakeWandb


COMMON = ["lora_rank=8", "save_every=2", "wandb_project=cookbook-tests", "wandb_name=run1",
          "behavior_if_log_dir_exists=raise"]
RECIPES: dict[str, list[str]] = {
    "sl_basic": ["max_steps=4", "eval_every=2"],
    "chat_sl": ["max_steps=4", "eval_every=2", "train_on_what=last_assistant_message"],
    "rl_basic": ["n_batches=4", "batch_size=4", "group_size=4", "eval_every=2", "eval_size=4",
                 "async_config.max_steps_off_policy=1", "async_config.groups_per_batch=4", "compute_post_kl=true"],
    "math_rl": ["n_batches=3", "batch_size=4", "group_size=4", "warmup_sft_steps=2", "eval_every=2", "eval_size=2",
                "stream_minibatch_config.num_minibatches=2", "stream_minibatch_config.groups_per_batch=4"],
    "dpo": ["max_steps=4", "eval_every=2", "test_size=4"],
    "distillation": ["n_batches=3", "batch_size=4", "group_size=2", "teacher_sft_steps=2", "eval_every=2",
                     "kl_penalty_coef=0.0"],
}


def _check_run_files(log_path: Path) -> list[dict[str, Any]]:
    log = RunLog(log_path)
    rows = log.metrics()
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "one metrics row per step"
    assert all("progress/done_frac" in r for r in rows)
    assert rows[-1]["progress/done_frac"] == 1.0
    final = log.last_checkpoint()
    assert final is not None and final["final"] is True
    assert final["sampler_path"].startswith("tinker://") and final["state_path"].startswith("tinker://")
    assert (log_path / "logs.log").read_text().strip()
    return rows


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_recipe_takes_tinker_cookbooks_keys(recipe: str, tmp_path: Path, fake_wandb: type[_FakeWandb]) -> None:
    module = importlib.import_module(f"cookbook.recipes.{recipe}")
    run = tmp_path / "run"
    module.run([f"log_path={run}", *COMMON, *RECIPES[recipe]])
    rows = _check_run_files(run)
    main = [w for w in fake_wandb.instances if w.hparams and w.hparams.get("log_path") == str(run)]
    assert len(main) == 1 and main[0].closed
    assert main[0].spec == {"wandb_project": "cookbook-tests", "wandb_name": "run1"}
    assert [s for s, _ in main[0].rows] == [r["step"] for r in rows]
    evaluated = [r for r in rows if any(k.startswith("test/") for k in r)]
    if recipe != "distillation":
        assert evaluated, "eval_every: evaluator metrics appear"
    if recipe == "rl_basic":
        assert all("kl_pre_post_v1" in r for r in rows if "env/all/reward/total" in r)
        assert all(r["async/staleness_max"] == min(r["step"], 1) for r in rows if "async/staleness_max" in r)
    if recipe == "math_rl":
        assert all(r["stream/minibatches"] == 2 for r in rows if "stream/minibatches" in r)
    if recipe == "distillation":
        assert all(r["teacher_kl/dataset_0"] == pytest.approx(r["teacher_kl"]) for r in rows if "teacher_kl" in r)


def test_load_checkpoint_path_hands_an_sft_run_to_rl(tmp_path: Path, fake_wandb: type[_FakeWandb],
                                                      tinker_mock: Any) -> None:
    """Both runs on one server (``base_url``), as on Tinker where checkpoints outlive a run."""
    from cookbook.recipes import rl_basic, sl_basic

    url = f"base_url={tinker_mock.base_url}"
    sl_basic.run([f"log_path={tmp_path / 'sft'}", url, "model_name=cookbook/tiny-chat", "max_steps=3",
                  "lora_rank=8", "eval_every=0"])
    final = RunLog(tmp_path / "sft").last_checkpoint()
    assert final is not None
    rl_basic.run([f"log_path={tmp_path / 'rl'}", url, "model_name=cookbook/tiny-chat",
                  f"load_checkpoint_path={final['state_path']}", "n_batches=2", "batch_size=2", "group_size=2",
                  "eval_size=0", "lora_rank=8"])
    rows = RunLog(tmp_path / "rl").metrics()
    assert [r["step"] for r in rows] == [0, 1]


def test_defaults_match_tinker_cookbook() -> None:
    import chz

    from cookbook.preference.train_dpo import DPOConfig
    from cookbook.rl.train import RLConfig
    from cookbook.supervised.train import SupervisedConfig

    tc_rl = pytest.importorskip("tinker_cookbook.rl.train")
    ours = {name: f._default for name, f in chz.chz_fields(RLConfig).items()}
    theirs = {name: f._default for name, f in chz.chz_fields(tc_rl.Config).items()}
    for key in ("lora_rank", "temperature", "kl_penalty_coef", "kl_discount_factor", "loss_fn", "num_substeps",
                "compute_post_kl", "remove_constant_reward_groups", "save_every", "eval_every", "num_groups_to_log",
                "load_checkpoint_path", "wandb_project", "wandb_name", "async_config", "stream_minibatch_config"):
        assert ours[key] == theirs[key], key
    for cls in (SupervisedConfig, DPOConfig):
        assert chz.chz_fields(cls)["lora_rank"]._default == 32

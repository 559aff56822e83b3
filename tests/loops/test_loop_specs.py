"""specs/loops/*.yaml checked against real runs of the loops on the mock (through the real SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cookbook.data import specs_dir
from cookbook.mock.tiny_chat import TINY_CHAT, tiny_chat_dir
from cookbook.renderers import get_renderer
from cookbook.runlog import RunLog
from cookbook.supervised.data import ConversationDataset, conversation_to_datum, read_conversations_jsonl
from cookbook.supervised.train import SupervisedConfig, train

SPECS = specs_dir("loops")
SL = yaml.safe_load((SPECS / "supervised.yaml").read_text())
RL = yaml.safe_load((SPECS / "rl.yaml").read_text())
CONVS = read_conversations_jsonl(Path(__file__).parents[2] / "cookbook" / "recipes" / "data" / "conversations.jsonl")


@pytest.fixture(scope="module")
def renderer() -> Any:
    return get_renderer("llama3", str(tiny_chat_dir()))


def _sl(tmp: Path, run: dict[str, Any], renderer: Any, client: Any) -> RunLog:
    test = [conversation_to_datum(c, renderer) for c in CONVS[40 : 40 + run["test_size"]]]
    cfg = SupervisedConfig(
        log_path=str(tmp), model_name=TINY_CHAT, renderer_name="llama3", learning_rate=run["learning_rate"],
        num_epochs=run["num_epochs"], batch_size=run["batch_size"], save_every=run["save_every"],
        eval_every=run["eval_every"], max_steps=run["max_steps"], lora_rank=4,
    )
    return train(cfg, client, ConversationDataset(CONVS[: run["n_conversations"]], run["batch_size"]), test, renderer)


def _ckpt_view(log: RunLog) -> list[dict[str, Any]]:
    keys = ("name", "batch", "epoch", "final")
    return [{k: r[k] for k in keys if k in r} for r in log.checkpoints()]


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in SL["cases"]])
def test_supervised_loop_spec(case: dict[str, Any], tinker_mock: Any, tmp_path: Path, renderer: Any) -> None:
    log = _sl(tmp_path, case["run"], renderer, tinker_mock.service_client())
    exp = case["expect"]
    rows = log.metrics()
    train_steps = [r["step"] for r in rows if "train_mean_nll" in r]
    assert train_steps == list(range(exp["total_steps"]))
    assert all(next(iter(r)) == "step" for r in rows)
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows}), "R6: one row per step"
    assert all(r["progress/done_frac"] == pytest.approx(min(r["step"] + 1, exp["total_steps"]) / exp["total_steps"])
               for r in rows)
    assert _ckpt_view(log) == exp["checkpoints"]
    assert [r["step"] for r in rows if "test/nll" in r] == exp["eval_steps"]
    lrs = {r["step"]: r["learning_rate"] for r in rows if "learning_rate" in r}
    for step, lr in exp.get("learning_rates", {}).items():
        assert lrs[int(step)] == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in SL["resume"]])
def test_supervised_resume_spec(case: dict[str, Any], tinker_mock: Any, tmp_path: Path, renderer: Any) -> None:
    run = case["run"]
    ref = _sl(tmp_path / "ref", run, renderer, tinker_mock.service_client())
    reference = {r["step"]: r["train_mean_nll"] for r in ref.metrics() if "train_mean_nll" in r}
    # the interrupted run: its log as it was when the chosen checkpoint had just been recorded, plus rows
    # for steps that ran after it but before the crash
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    records = ref.checkpoints()
    upto = next(i for i, r in enumerate(records) if r["name"] == case["interrupt_after_checkpoint"])
    (crashed / "checkpoints.jsonl").write_text(
        "".join(line + "\n" for line in (ref.dir / "checkpoints.jsonl").read_text().splitlines()[: upto + 1])
    )
    resume_at = records[upto]["batch"]
    assert resume_at == case["expect"]["resumed_at"]
    lines = [ln for ln in (ref.dir / "metrics.jsonl").read_text().splitlines() if ln]
    (crashed / "metrics.jsonl").write_text("".join(ln + "\n" for ln in lines[: resume_at + 2]))
    (crashed / "config.json").write_text((ref.dir / "config.json").read_text())
    resumed = _sl(crashed, run, renderer, tinker_mock.service_client())
    got = {r["step"]: r["train_mean_nll"] for r in resumed.metrics() if "train_mean_nll" in r}
    assert got == reference
    assert [r["step"] for r in resumed.metrics()] == sorted(r["step"] for r in resumed.metrics())


def _rl(tmp: Path, run: dict[str, Any], renderer: Any, client: Any) -> RunLog:
    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.train import AsyncConfig, RLConfig, StreamMinibatchConfig, train_rl

    dataset = ArithmeticDataset(renderer, run["batch_size"], run["group_size"], run["n_batches"])
    cfg = RLConfig(
        log_path=str(tmp), model_name=TINY_CHAT, renderer_name="llama3", learning_rate=0.05, max_tokens=4,
        lora_rank=4, save_every=run["save_every"], mode=run["mode"],
        async_config=AsyncConfig(max_steps_off_policy=run["max_steps_off_policy"]) if run["mode"] == "async" else None,
        stream_minibatch_config=StreamMinibatchConfig(num_minibatches=run["num_minibatches"])
        if run["mode"] == "stream" else None,
    )
    return train_rl(cfg, client, dataset, renderer)


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in RL["cases"]])
def test_rl_loop_spec(case: dict[str, Any], tinker_mock: Any, tmp_path: Path, renderer: Any) -> None:
    log = _rl(tmp_path, case["run"], renderer, tinker_mock.service_client())
    exp = case["expect"]
    rows = log.metrics()
    if "checkpoints" in exp:
        assert [{k: r[k] for k in ("name", "batch", "final") if k in r} for r in log.checkpoints()] == exp["checkpoints"]
    if "steps" in exp:
        assert [r["step"] for r in rows] == exp["steps"]
    if "staleness_max_at_most" in exp:
        assert max(r["async/staleness_max"] for r in rows) <= exp["staleness_max_at_most"]
        assert min(r["async/staleness_min"] for r in rows) >= exp["staleness_min_at_least"]
        assert rows[0]["async/staleness_max"] == exp["step0_staleness"]
        assert all(r["env/all/total_episodes"] == exp["groups_per_step"] * case["run"]["group_size"] for r in rows)
    if "staleness_by_step" in exp:
        assert [r["async/staleness_max"] for r in rows] == exp["staleness_by_step"]
        assert [r["async/staleness_min"] for r in rows] == exp["staleness_by_step"]
    if "sampler_versions" in exp:
        recs = {r["name"]: r for r in log.checkpoints()}
        for name, versions in exp["sampler_versions"].items():
            assert sorted(recs[name]["sampler_versions"]) == versions
            assert all(p.startswith("tinker://") for p in recs[name]["sampler_versions"].values())
    if "minibatches_per_step" in exp:
        assert all(r["stream/minibatches"] == exp["minibatches_per_step"] for r in rows)


def test_kl_penalty_against_the_base_model(tinker_mock: Any, tmp_path: Path, renderer: Any) -> None:
    """Step 0: the policy is the base model (LoRA starts at zero), so the KL estimate is exactly 0; after
    training, the sampled tokens are likelier under the policy than under the base: a positive estimate."""
    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.train import RLConfig, train_rl

    cfg = RLConfig(log_path=str(tmp_path), model_name=TINY_CHAT, renderer_name="llama3", learning_rate=0.05,
                   max_tokens=4, lora_rank=4, save_every=0, kl_penalty_coef=0.5)
    log = train_rl(cfg, tinker_mock.service_client(), ArithmeticDataset(renderer, 6, 4, 8), renderer)
    kl = [r["kl_policy_base"] for r in log.metrics()]
    assert len(kl) == 8 and abs(kl[0]) < 1e-6
    assert sum(kl[4:]) / 4 > 0.01, kl


class _RecordingSampler:
    """A sampling client stand-in that records every request (what the RL loop asks the SDK for)."""

    def __init__(self, stop_token: int):
        self.calls: list[tuple[int, int | None]] = []
        self.stop_token = stop_token

    async def sample(self, prompt: Any, num_samples: int, sampling_params: Any) -> Any:
        import types

        self.calls.append((num_samples, sampling_params.seed))
        seq = types.SimpleNamespace(tokens=[self.stop_token], logprobs=[-0.5], stop_reason="stop")
        return types.SimpleNamespace(sequences=[seq] * num_samples)


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in RL["requests"]])
def test_rl_requests_spec(case: dict[str, Any], renderer: Any) -> None:
    import asyncio
    import hashlib

    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.rollouts import TinkerTokenCompleter, rollout_groups

    sampler = _RecordingSampler(renderer.get_stop_sequences()[0])
    builders = ArithmeticDataset(renderer, case["n_groups"], case["group_size"], 1).get_batch(0)
    policy = TinkerTokenCompleter(sampler, max_tokens=4)
    groups = asyncio.run(rollout_groups(builders, policy, seed_key=(case["seed"], case["step"])))
    assert [len(g.trajectories) for g in groups] == [case["group_size"]] * case["n_groups"]
    assert len(sampler.calls) == case["expect"]["requests"]
    assert sorted(n for n, _ in sampler.calls) == case["expect"]["num_samples"]

    def r7(*parts: int) -> int:  # the formula as the spec states it
        return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little") & 0x7FFFFFFF

    expected = {r7(case["seed"], case["step"], g, 0, 0) for g in range(case["n_groups"])}
    assert {s for _, s in sampler.calls} == expected

"""RL training loops: synchronous, streaming minibatches, and asynchronous off-policy.

Semantics (pinned by ``specs/loops/rl.yaml``; the run directory, resume, checkpoints and logging are the
shared skeleton of :mod:`cookbook.loop`):

* **sync** — step ``i``: roll out every group of batch ``i`` with the current sampler, compute advantages
  (group-centred by default; constant-reward groups optionally removed over the *whole batch*), assemble datums,
  then ``num_substeps`` × (forward_backward + optim_step) on consecutive slices, then publish new sampler weights.
* **stream** (``stream_minibatch_config``) — the batch's groups are split in index order into
  ``num_minibatches`` minibatches; a minibatch's ``forward_backward`` is submitted as soon as all of its groups
  have finished (while later groups are still sampling), then one ``optim_step``. Gradients accumulate across
  the minibatches, so in expectation this is sync mode with less idle time.
* **async** (``async_config``) — a **fixed lag**: batch ``b`` is sampled with the sampler published after
  step ``v(b) = max(0, b - max_steps_off_policy)``, as soon as that sampler exists, i.e. while steps
  ``v(b)..b-1`` train. Staleness ``b - v(b)`` is logged as ``async/staleness_{min,mean,max}``. Nothing is
  discarded. (tinker-cookbook's async mode samples with whichever sampler is current, so its staleness
  depends on timing and no run can be reproduced; the fixed lag makes a run, and its resume, deterministic.)
* **Checkpoints and resume.** After step ``i`` trains, a checkpoint named ``{i+1:06d}`` records
  ``batch: i + 1`` (the next step) with ``state_path`` and ``sampler_path``. An async checkpoint also records
  ``sampler_versions``: the sampler paths of versions ``v(i+1) .. i+1``, the samplers of the batches still in
  flight. In-flight *samples* are not stored: they are a function of (sampler weights, prompt, seed) and are
  re-sampled on resume (spec R8). Seeds come from ``(seed, step, group, turn, rollout)`` (spec R7).
* Rollouts are :func:`cookbook.rl.rollouts.do_group_rollout`: one sampling request per group turn for the
  rollouts sharing an observation (``num_samples = group_size`` for problem environments).
* KL penalty (``kl_penalty_coef > 0``): the reference model's logprobs of every datum come from
  ``compute_logprobs`` on a sampling client of ``kl_reference_config.base_model`` (default: the base model);
  ``advantages += coef·mask·(batch_mean(diff) - diff)`` (``cookbook.rl.kl.incorporate_kl_penalty``).
* ``compute_post_kl``: after the update, the new sampler scores the step's data; ``kl_pre_post_v1`` /
  ``kl_pre_post_v2`` are the k1 / k2 estimates between the sampling and post-update logprobs (tinker-cookbook).
* ``eval_every``: every evaluator built by ``evaluator_builders`` runs on the current sampler before step ``i``
  when ``i % eval_every == 0``, and after the last step; its metrics join that step's row.
* A rollout worker that raises fails the run with a :class:`~cookbook.errors.TrainingError` naming the group —
  never a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import chz
import numpy as np

from cookbook.errors import ConfigurationError
from cookbook.loop import (
    Run,
    RunConfig,
    adam_params,
    check_choice,
    check_finite_loss,
    logging_spec_of,
    open_run,
    resolve,
)
from cookbook.losses import LOSS_INPUTS
from cookbook.rl.advantages import ADVANTAGE_METHODS, compute_advantages, filter_constant_reward_groups
from cookbook.rl.data import (
    assemble_training_data,
    reference_logprobs,
    remove_mask,
    split_list,
    with_advantages,
)
from cookbook.rl.kl import incorporate_kl_penalty, kl_sample_train
from cookbook.rl.rollouts import TinkerTokenCompleter, derive_seed, rollout_groups
from cookbook.rl.types import EnvGroupBuilder, RLDataset, TrajectoryGroup
from cookbook.runlog import RunLog

MODES = ("sync", "stream", "async")
# stable_reinforce needs provenance spans naming recorded samples (tinker-cookbook's data_processing builds them);
# this loop's datums carry none, so the server would refuse every step: it is not offered here
LOSSES: tuple[str, ...] = tuple(k for k in LOSS_INPUTS if k not in ("cross_entropy", "stable_reinforce"))


@chz.chz
class AsyncConfig:
    """tinker-cookbook ``AsyncConfig``: sampling runs ``max_steps_off_policy`` steps ahead of training."""

    max_steps_off_policy: int = chz.field(default=1, doc="how many steps sampling runs ahead of training")
    groups_per_batch: int | None = chz.field(
        default=None, doc="groups per training step; must equal the dataset's batch size (None: that size)")
    loss_fn: str | None = chz.field(default=None, doc="loss for async runs (None: the config's loss_fn)")


@chz.chz
class StreamMinibatchConfig:
    """tinker-cookbook ``StreamMinibatchConfig``: train minibatches as their groups finish."""

    groups_per_batch: int | None = chz.field(
        default=None, doc="groups per step; must equal the dataset's batch size (None: that size)")
    num_minibatches: int = chz.field(default=2, doc="forward_backward calls per step")


@chz.chz
class KLReferenceConfig:
    base_model: str | None = chz.field(default=None, doc="reference base model (None: model_name, no adapters)")


@chz.chz
class RLConfig(RunConfig):
    """The RL loop's configuration (tinker-cookbook ``rl.train.Config`` key names and defaults)."""

    log_path: str = chz.field(default="runs/rl", doc="run directory (metrics, checkpoints, config, report)")
    learning_rate: float = chz.field(default=4e-5, doc="Adam learning rate")
    max_tokens: int = chz.field(default=16, doc="max sampled tokens per turn")
    temperature: float = chz.field(default=1.0, doc="sampling temperature")
    loss_fn: str = chz.field(default="importance_sampling", doc="Tinker loss: importance_sampling, ppo, cispo, dro")
    loss_fn_config: dict[str, float] | None = chz.field(default=None, doc="loss options (e.g. clip thresholds)")
    num_substeps: int = chz.field(default=1, doc="optimizer steps per training iteration")
    advantage_method: str = chz.field(default="centred", doc="group advantages: centred, grpo, rloo, dr_grpo")
    remove_constant_reward_groups: bool = chz.field(default=False, doc="drop groups whose rewards are all equal")
    eval_every: int = chz.field(default=20, doc="run the evaluators every N steps (0: only at the end)")
    seed: int = chz.field(default=0, doc="seed of the LoRA init and of every sampling request")
    mode: str | None = chz.field(default=None, doc="sync, stream or async (None: from async_config / "
                                                     "stream_minibatch_config, else sync)")
    async_config: AsyncConfig | None = chz.field(default=None, doc="async (off-policy) mode settings")
    stream_minibatch_config: StreamMinibatchConfig | None = chz.field(default=None, doc="stream mode settings")
    max_concurrency: int = chz.field(default=64, doc="groups rolled out at once")
    kl_penalty_coef: float = chz.field(default=0.0, doc="> 0: KL penalty against the reference model")
    kl_discount_factor: float = chz.field(default=0.0, doc="> 0: discounted future sum of the KL penalty")
    kl_reference_config: KLReferenceConfig | None = chz.field(default=None, doc="the KL reference model")
    compute_post_kl: bool = chz.field(default=False, doc="log kl_pre_post_v1/v2 after each update")
    num_groups_to_log: int = chz.field(default=4, doc="groups written to samples.jsonl per step")
    load_checkpoint_path: str | None = chz.field(
        default=None, doc="start a fresh run from these weights (fresh optimizer), e.g. an SFT final state")
    evaluator_builders: list[Any] = chz.field(default_factory=list, doc="sampling-client evaluator builders")

    @property
    def run_mode(self) -> str:
        return self.mode or ("async" if self.async_config else "stream" if self.stream_minibatch_config else "sync")

    @property
    def max_steps_off_policy(self) -> int:
        return (self.async_config or AsyncConfig()).max_steps_off_policy

    @property
    def num_minibatches(self) -> int:
        return (self.stream_minibatch_config or StreamMinibatchConfig()).num_minibatches

    @property
    def training_loss_fn(self) -> str:
        if self.run_mode == "async" and self.async_config is not None and self.async_config.loss_fn:
            return self.async_config.loss_fn
        return self.loss_fn


def validate_rl_config(cfg: RLConfig) -> None:
    """Everything checkable without a service (called before anything starts)."""
    if cfg.mode is not None:
        check_choice("mode", cfg.mode, MODES)
        implied = "async" if cfg.async_config else "stream" if cfg.stream_minibatch_config else None
        if implied and implied != cfg.mode:
            raise ConfigurationError(f"mode={cfg.mode!r} conflicts with the {implied} settings given; drop one")
    if cfg.async_config and cfg.stream_minibatch_config:
        raise ConfigurationError("async_config and stream_minibatch_config are exclusive; set one")
    check_choice("loss_fn", cfg.training_loss_fn, LOSSES)
    check_choice("advantage_method", cfg.advantage_method, ADVANTAGE_METHODS)
    for key, value, low in (("lora_rank", cfg.lora_rank, 1), ("max_tokens", cfg.max_tokens, 1),
                            ("num_substeps", cfg.num_substeps, 1), ("max_concurrency", cfg.max_concurrency, 1),
                            ("max_steps_off_policy", cfg.max_steps_off_policy, 0),
                            ("num_minibatches", cfg.num_minibatches, 1)):
        if value < low:
            raise ConfigurationError(f"{key}={value} must be >= {low}")
    if not cfg.learning_rate > 0:
        raise ConfigurationError(f"learning_rate={cfg.learning_rate} must be > 0")


def _group_metrics(groups: Sequence[TrajectoryGroup]) -> dict[str, float]:
    totals = [r for g in groups for r in g.total_rewards()]
    metrics: dict[str, float] = {"env/all/reward/total": float(np.mean(totals)) if totals else float("nan")}
    keys: dict[str, list[float]] = {}
    ac_tokens = 0
    turns = 0
    for g in groups:
        for traj in g.trajectories:
            for tr in traj.transitions:
                turns += 1
                ac_tokens += len(tr.ac.tokens)
                for k, v in tr.metrics.items():
                    keys.setdefault(k, []).append(float(v))
    for k, vs in keys.items():
        metrics[f"env/all/{k}"] = float(np.mean(vs))
    metrics["env/all/total_episodes"] = float(sum(len(g.trajectories) for g in groups))
    metrics["env/all/ac_tokens_per_turn"] = ac_tokens / max(turns, 1)
    const = [len(set(g.total_rewards())) <= 1 for g in groups]
    metrics["env/all/by_group/frac_mixed"] = 1.0 - float(np.mean(const)) if groups else 0.0
    return metrics


def _floats(td: Any) -> np.ndarray:
    return np.asarray(td.tolist(), dtype=np.float64)


def _mean_metrics(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {k for p in parts for k in p}
    return {k: float(np.mean([p[k] for p in parts if k in p])) for k in keys}


SamplingEvaluator = Callable[[Any], Any]  # sampling_client -> metrics (dict, or an awaitable of one)


class RLTrainer:
    """The RL step logic on top of the skeleton; subclasses adapt one step by overriding :meth:`prepare`
    (groups -> datums + metrics), as on-policy distillation does to add the teacher's reverse-KL."""

    kind = "rl"

    def __init__(self, cfg: RLConfig, service_client: Any, dataset: RLDataset, renderer: Any, progress: Any = None,
                 evaluators: Sequence[SamplingEvaluator] = ()):
        validate_rl_config(cfg)
        if not cfg.model_name or not cfg.renderer_name:
            raise ConfigurationError("the RL loop needs model_name and renderer_name")
        if len(dataset) == 0:
            raise ConfigurationError("the RL dataset is empty")
        self.cfg, self.dataset, self.renderer, self.progress = cfg, dataset, renderer, progress
        self.service_client = service_client
        self.mode = cfg.run_mode
        self.k = cfg.max_steps_off_policy if self.mode == "async" else 0
        self.evaluators = [*evaluators, *(b() for b in cfg.evaluator_builders)]
        self.run: Run = open_run(cfg.log_path, self.kind, cfg, cfg.behavior_if_log_dir_exists,
                                 logging_spec=logging_spec_of(cfg))
        self.log: RunLog = self.run.log
        self.end = len(dataset) if cfg.max_steps is None else min(len(dataset), cfg.max_steps)
        self.start = self.run.begin(self.end)
        self.done = self.run.done
        if self.done:
            return
        self._check_group_counts()
        self.tc = self.run.training_client(service_client, cfg)
        self.reference = None
        if cfg.kl_penalty_coef > 0:
            ref = (cfg.kl_reference_config.base_model if cfg.kl_reference_config else None) or cfg.model_name
            self.reference = resolve(service_client.create_sampling_client(base_model=ref))
        self.samplers: dict[int, Any] = {}
        self.sampler_paths: dict[int, str] = {}
        if self.mode == "async" and self.run.last is not None:
            for v, path in (self.run.last.get("sampler_versions") or {}).items():
                self.sampler_paths[int(v)] = path
                self.samplers[int(v)] = resolve(service_client.create_sampling_client(model_path=path))
        if self.start not in self.samplers:
            self._publish(self.start)

    def _check_group_counts(self) -> None:
        conf = self.cfg.async_config if self.mode == "async" else self.cfg.stream_minibatch_config
        gpb = getattr(conf, "groups_per_batch", None)
        if gpb is not None:
            n = len(self.dataset.get_batch(self.start))
            if gpb != n:
                raise ConfigurationError(
                    f"groups_per_batch={gpb} but the dataset's batches have {n} groups; cookbook trains one dataset "
                    "batch per step (set groups_per_batch to the batch size, or leave it unset)"
                )

    # ------------------------------------------------------------------------------------ samplers
    def _publish(self, version: int) -> None:
        """New sampler weights for ``version`` (= steps trained). Async runs keep persistent, named sampler
        checkpoints so a resume can rebuild the in-flight samplers."""
        if self.mode == "async":
            path = self.tc.save_weights_for_sampler(f"sampler_{version:06d}").result().path
            self.sampler_paths[version] = path
            self.samplers[version] = resolve(self.service_client.create_sampling_client(model_path=path))
        else:
            self.samplers[version] = resolve(self.tc.save_weights_and_get_sampling_client())
        for v in [v for v in self.samplers if v < version - self.k]:
            del self.samplers[v]

    def version_for(self, batch: int) -> int:
        return max(0, batch - self.k)

    # ------------------------------------------------------------------------------------ one step
    def prepare(self, groups: list[TrajectoryGroup]) -> tuple[list[Any], dict[str, float]]:
        metrics = _group_metrics(groups)
        if self.cfg.remove_constant_reward_groups:
            keep = filter_constant_reward_groups([g.total_rewards() for g in groups])
            metrics["env/all/groups_kept"] = float(len(keep))
            groups = [groups[i] for i in keep]
        advs = compute_advantages(
            [g.total_rewards() for g in groups], method=self.cfg.advantage_method  # type: ignore[arg-type]
        )
        data, meta = assemble_training_data(groups, [list(a) for a in advs])
        self.datum_groups = [groups[m["group_idx"]] for m in meta]
        if self.reference is not None and data:
            data, kl_metrics = self._kl_penalty(data)
            metrics.update(kl_metrics)
        return data, metrics

    def _kl_penalty(self, data: list[Any]) -> tuple[list[Any], dict[str, float]]:
        new_advs, metrics = incorporate_kl_penalty(
            [_floats(d.loss_fn_inputs["advantages"]) for d in data],
            [_floats(d.loss_fn_inputs["logprobs"]) for d in data],
            reference_logprobs(self.reference, data),
            [_floats(d.loss_fn_inputs["mask"]) for d in data],
            self.cfg.kl_penalty_coef,
            self.cfg.kl_discount_factor,
        )
        return [with_advantages(d, a) for d, a in zip(data, new_advs)], metrics

    def _fb(self, data: list[Any]) -> Any:
        return self.tc.forward_backward([remove_mask(d) for d in data], self.cfg.training_loss_fn,
                                        self.cfg.loss_fn_config)

    def _collect(self, step: int, data: list[Any], fbs: Sequence[Any], metrics: dict[str, float]) -> None:
        out_lps: list[np.ndarray] = []
        for fb in fbs:
            res = fb.result()
            out_lps += [_floats(o["logprobs"]) for o in res.loss_fn_outputs]
            for k, v in res.metrics.items():
                metrics[f"train/{k}"] = metrics.get(f"train/{k}", 0.0) + float(v)
        for k, v in metrics.items():
            if k.startswith("train/loss"):
                check_finite_loss(step, k, v, lambda: f"of batch {step}")
        mask = [_floats(d.loss_fn_inputs["mask"]) for d in data]
        if any(m.sum() > 0 for m in mask):
            metrics.update(kl_sample_train([_floats(d.loss_fn_inputs["logprobs"]) for d in data], out_lps, mask))
        metrics["optim/num_datums"] = float(len(data))
        metrics["optim/lr"] = self.cfg.learning_rate

    def train_on(self, step: int, data: list[Any]) -> dict[str, float]:
        if not data:
            return {"optim/skipped": 1.0}
        fbs, optims = [], []
        for chunk in split_list(data, self.cfg.num_substeps):
            fbs.append(self._fb(chunk))
            optims.append(self.tc.optim_step(adam_params(self.cfg, self.cfg.learning_rate)))
        metrics: dict[str, float] = {}
        self._collect(step, data, fbs, metrics)
        for o in optims:
            o.result()
        return metrics

    def after_update(self, step: int, data: list[Any], metrics: dict[str, float]) -> None:
        """Checkpoint when due, publish the sampler of version ``step + 1``, post-update KL."""
        nxt = step + 1
        self._publish(nxt)
        if self.cfg.compute_post_kl and data:
            post = reference_logprobs(self.samplers[nxt], data)
            kl = kl_sample_train([_floats(d.loss_fn_inputs["logprobs"]) for d in data], post,
                                 [_floats(d.loss_fn_inputs["mask"]) for d in data])
            metrics["kl_pre_post_v1"] = kl["optim/kl_sample_train_v1"]
            metrics["kl_pre_post_v2"] = kl["optim/kl_sample_train_v2"]
        if self.cfg.save_every > 0 and nxt % self.cfg.save_every == 0 and nxt < self.end:
            self._save(f"{nxt:06d}", nxt)

    def _save(self, name: str, batch: int, final: bool = False) -> None:
        extra: dict[str, Any] = {}
        if self.mode == "async" and not final:
            extra["sampler_versions"] = {str(v): self.sampler_paths[v]
                                         for v in range(self.version_for(batch), batch + 1)}
        self.run.save(self.tc, name, batch, final=final, **extra)

    def evaluate(self, step: int) -> None:
        if not self.evaluators:
            return
        sampler = self.samplers[max(self.samplers)] if step >= self.end else self.samplers.get(step)
        if sampler is None:
            return
        metrics: dict[str, float] = {}
        for ev in self.evaluators:
            out = ev(sampler)
            if asyncio.iscoroutine(out):
                out = asyncio.run(out)
            metrics.update(out)
        self.run.add(step, metrics)

    def _eval_due(self, step: int) -> bool:
        return self.cfg.eval_every > 0 and step % self.cfg.eval_every == 0

    def record(self, step: int, metrics: dict[str, float], groups: Sequence[TrajectoryGroup], t0: float) -> None:
        metrics["time/step"] = time.perf_counter() - t0
        row = self.run.log_step(step, metrics)
        self._log_samples(step, groups)
        if self.progress is not None:
            self.progress(step, self.end, row)

    def _log_samples(self, step: int, groups: Sequence[TrajectoryGroup]) -> None:
        """The report's ``rl_group`` rows (:func:`cookbook.samples.log_rl_groups`) on :func:`sample_steps`: the
        first ``num_groups_to_log`` groups with their rewards and advantages before any KL penalty."""
        from cookbook.samples import log_rl_groups, sample_steps

        if self.cfg.num_groups_to_log <= 0 or step not in sample_steps(self.end):
            return
        shown = list(groups)[: self.cfg.num_groups_to_log]
        advs = compute_advantages([g.total_rewards() for g in shown], method=self.cfg.advantage_method)  # type: ignore[arg-type]
        log_rl_groups(self.log.dir, step, self.renderer, shown, [list(a) for a in advs])

    def finish(self) -> None:
        self.evaluate(self.end)
        self.run.flush()
        self._save("final", self.end, final=True)

    # ------------------------------------------------------------------------------------ rollouts
    async def rollout(self, batch: int) -> list[TrajectoryGroup]:
        sampler = self.samplers[self.version_for(batch)]
        policy = TinkerTokenCompleter(sampler, self.cfg.max_tokens, self.cfg.temperature)
        return await rollout_groups(self.dataset.get_batch(batch), policy, self.cfg.max_concurrency,
                                    seed_key=(self.cfg.seed, batch), where=f"step {batch}: ")

    # ------------------------------------------------------------------------------------ modes
    def run_sync(self) -> None:
        for i in range(self.start, self.end):
            self.run.step = i
            if self._eval_due(i):
                self.evaluate(i)
            t0 = time.perf_counter()
            groups = asyncio.run(self.rollout(i))
            data, metrics = self.prepare(groups)
            metrics.update(self.train_on(i, data))
            self.after_update(i, data, metrics)
            self.record(i, metrics, groups, t0)
        self.finish()

    def run_stream(self) -> None:
        for i in range(self.start, self.end):
            self.run.step = i
            if self._eval_due(i):
                self.evaluate(i)
            t0 = time.perf_counter()
            groups, data, metrics = asyncio.run(self._stream_step(i))
            self.after_update(i, data, metrics)
            self.record(i, metrics, groups, t0)
        self.finish()

    async def _stream_step(self, i: int) -> tuple[list[TrajectoryGroup], list[Any], dict[str, float]]:
        builders = list(self.dataset.get_batch(i))
        sampler = self.samplers[i]
        policy = TinkerTokenCompleter(sampler, self.cfg.max_tokens, self.cfg.temperature)
        n_mb = max(1, min(self.cfg.num_minibatches, len(builders)))
        bounds = np.linspace(0, len(builders), n_mb + 1).astype(int)
        from cookbook.rl.rollouts import do_group_rollout

        sem = asyncio.Semaphore(self.cfg.max_concurrency)

        async def one(gi: int) -> TrajectoryGroup:
            async with sem:
                return await do_group_rollout(builders[gi], policy, gi, seed_key=(self.cfg.seed, i, gi),
                                              where=f"step {i}: ")

        tasks = [asyncio.ensure_future(one(gi)) for gi in range(len(builders))]
        try:
            groups: list[TrajectoryGroup] = []
            data: list[Any] = []
            fbs: list[Any] = []
            parts: list[dict[str, float]] = []
            for m in range(n_mb):  # minibatch m: groups bounds[m]..bounds[m+1]-1, in index order
                mb = [await tasks[g] for g in range(bounds[m], bounds[m + 1])]
                mb_data, mb_metrics = await asyncio.to_thread(self.prepare, mb)
                parts.append(mb_metrics)
                if mb_data:
                    fbs.append(self._fb(mb_data))
                groups += mb
                data += mb_data
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        optim = self.tc.optim_step(adam_params(self.cfg, self.cfg.learning_rate))
        metrics = _mean_metrics(parts)
        metrics.update(_group_metrics(groups))
        self._collect(i, data, fbs, metrics)
        optim.result()
        metrics["stream/minibatches"] = float(len(fbs))
        return groups, data, metrics

    def run_async(self) -> None:
        asyncio.run(self._run_async())
        self.finish()

    async def _run_async(self) -> None:
        published = asyncio.Condition()
        state = {"version": self.start}
        results: dict[int, asyncio.Task[list[TrajectoryGroup]]] = {}

        async def worker(batch: int) -> list[TrajectoryGroup]:
            v = self.version_for(batch)
            async with published:
                await published.wait_for(lambda: state["version"] >= v)
            return await self.rollout(batch)

        for b in range(self.start, self.end):
            results[b] = asyncio.ensure_future(worker(b))
        try:
            for i in range(self.start, self.end):
                self.run.step = i
                if self._eval_due(i):
                    await asyncio.to_thread(self.evaluate, i)
                t0 = time.perf_counter()
                groups = await results.pop(i)
                staleness = float(i - self.version_for(i))
                data, metrics = await asyncio.to_thread(self.prepare, groups)
                metrics.update(await asyncio.to_thread(self.train_on, i, data))
                metrics.update({"async/staleness_min": staleness, "async/staleness_mean": staleness,
                                "async/staleness_max": staleness})
                await asyncio.to_thread(self.after_update, i, data, metrics)
                async with published:
                    state["version"] = i + 1
                    published.notify_all()
                self.record(i, metrics, groups, t0)
        finally:
            for t in results.values():
                t.cancel()
            await asyncio.gather(*results.values(), return_exceptions=True)

    def train(self) -> RunLog:
        if not self.done:
            {"sync": self.run_sync, "stream": self.run_stream, "async": self.run_async}[self.mode]()
        return self.log


def eval_seed(seed: int, step: int, index: int) -> int:
    """Seeds of evaluation requests (independent of the training seeds)."""
    return derive_seed(seed, -1, step, index)


def train_rl(config: RLConfig, service_client: Any, dataset: RLDataset, renderer: Any, progress: Any = None,
             evaluators: Sequence[SamplingEvaluator] = ()) -> RunLog:
    """Run (or resume) RL training; returns the run log."""
    from cookbook.loop import opened

    with opened(config.log_path, RLTrainer.kind, config, config.behavior_if_log_dir_exists,
                logging_spec_of(config)):
        return RLTrainer(config, service_client, dataset, renderer, progress, evaluators).train()


__all__ = ["AsyncConfig", "EnvGroupBuilder", "KLReferenceConfig", "RLConfig", "RLTrainer", "StreamMinibatchConfig",
           "train_rl", "validate_rl_config"]

"""RL training loops: synchronous, streaming minibatches, and asynchronous off-policy.

Semantics (pinned by ``specs/loops/rl.yaml``):

* **sync** — step ``i``: roll out every group of batch ``i`` with the current sampler, compute advantages
  (group-centred by default; constant-reward groups optionally removed over the *whole batch*), assemble datums,
  then ``num_substeps`` × (forward_backward + optim_step) on consecutive slices, then publish new sampler weights.
* **stream** — groups are trained in ``num_minibatches`` minibatches as soon as enough of them have finished
  (forward_backward per minibatch), with one optim_step per substep at the end, so gradients accumulate across
  the minibatches of a substep: in expectation equal to sync mode, with less idle time.
* **async** — rollout workers keep sampling with whatever sampler is current; step ``i`` trains on the oldest
  ``groups_per_batch`` finished groups (sorted by the sampler step that produced them). A group produced by
  sampler ``j`` has staleness ``i - j``; groups more than ``max_steps_off_policy`` behind are never produced
  because a worker waits before starting a group that could not be trained in time. Nothing is discarded.
  ``async/staleness_{min,mean,max}`` is logged.
* KL penalty (``kl_penalty_coef > 0``): the reference model's logprobs of every datum come from
  ``compute_logprobs`` on a sampling client of ``kl_reference_model`` (default: the base model itself, i.e. the
  policy without its adapters); ``advantages += coef·mask·(batch_mean(diff) - diff)`` with
  ``diff = (sampled - reference)·mask`` (``cookbook.rl.kl.incorporate_kl_penalty``); ``kl_policy_base`` is logged.
* A rollout worker that raises fails the run with a :class:`~cookbook.errors.TrainingError` naming the group —
  never a hang (workers are tasks whose exceptions propagate; queues are never awaited without them).
* Sampling seeds are derived from ``(seed, step, group, rollout)``, so a resumed run samples what an
  uninterrupted run would have sampled. Checkpoints are taken after step ``i`` finishes and record
  ``batch: i + 1`` (the next step to run); resume loads weights + optimizer state and continues there.
* ``init_state_path`` (optional): a fresh run (no checkpoint to resume from) starts from these saved weights
  (``create_training_client_from_state``: weights only, a fresh optimizer), e.g. the final state of an SFT
  warm-up. A resumed run ignores it: its own checkpoint already descends from that state.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cookbook.errors import ConfigurationError, TrainingError
from cookbook.rl.advantages import compute_advantages, filter_constant_reward_groups
from cookbook.rl.data import (
    assemble_training_data,
    reference_logprobs,
    remove_mask,
    split_list,
    with_advantages,
)
from cookbook.rl.kl import incorporate_kl_penalty, kl_sample_train
from cookbook.rl.rollouts import TinkerTokenCompleter, run_rollout
from cookbook.rl.types import EnvGroupBuilder, RLDataset, TrajectoryGroup
from cookbook.runlog import RunLog


@dataclass
class RLConfig:
    log_path: str
    model_name: str
    renderer_name: str
    learning_rate: float = 4e-5
    max_tokens: int = 16
    temperature: float = 1.0
    lora_rank: int = 8
    loss_fn: str = "importance_sampling"
    loss_fn_config: dict[str, float] | None = None
    num_substeps: int = 1
    advantage_method: str = "centred"
    remove_constant_reward_groups: bool = False
    save_every: int = 5
    max_steps: int | None = None
    seed: int = 0
    mode: Literal["sync", "stream", "async"] = "sync"
    num_minibatches: int = 2  # stream mode
    max_steps_off_policy: int = 1  # async mode
    max_concurrency: int = 64
    kl_penalty_coef: float = 0.0  # > 0: penalise KL to a reference policy (centred on the batch mean)
    kl_discount_factor: float = 0.0  # > 0: discounted future sum of the KL penalty
    kl_reference_model: str | None = None  # reference base model (default: model_name without adapters)
    samples_to_log: int = 2
    init_state_path: str | None = None  # start a fresh run from these weights (no optimizer state)
    extra: dict[str, Any] = field(default_factory=dict)


def _seed(*parts: int) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class _SeededPolicy:
    """A sampler policy whose seed depends only on (run seed, step, group, rollout, turn)."""

    def __init__(
        self, sampling_client: Any, cfg: RLConfig, step: int, group: int, rollout: int, sem: asyncio.Semaphore
    ):
        self.sem = sem
        self.sampling_client = sampling_client
        self.cfg = cfg
        self.key = (cfg.seed, step, group, rollout)
        self.turn = 0

    async def __call__(self, ob: Any, stop: Any) -> Any:
        completer = TinkerTokenCompleter(
            self.sampling_client, self.cfg.max_tokens, self.cfg.temperature, seed=_seed(*self.key, self.turn)
        )
        self.turn += 1
        async with self.sem:  # at most cfg.max_concurrency sampling requests in flight
            return await completer(ob, stop)


async def _rollout_group(
    builder: EnvGroupBuilder, sampling_client: Any, cfg: RLConfig, step: int, gi: int, sem: asyncio.Semaphore
) -> TrajectoryGroup:
    envs = await builder.make_envs()

    async def one(ri: int) -> Any:
        try:
            return await run_rollout(_SeededPolicy(sampling_client, cfg, step, gi, ri, sem), envs[ri])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise TrainingError(
                f"step {step}: rollout {ri} of group {gi} ({type(builder).__name__}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    trajectories = list(await asyncio.gather(*(one(ri) for ri in range(len(envs)))))
    rewards = await builder.compute_group_rewards(trajectories, envs)
    return TrajectoryGroup(trajectories, [r for r, _ in rewards], [m for _, m in rewards])


async def _gather_all(coros: Sequence[Any]) -> list[Any]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


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


class RLTrainer:
    """The loop machinery shared by every RL variant: resume, rollouts, datum assembly, training, checkpoints.

    Subclasses adapt one step by overriding :meth:`prepare` (groups -> datums + metrics), as on-policy
    distillation does to add the teacher's reverse-KL to the advantages.
    """

    def __init__(self, cfg: RLConfig, service_client: Any, dataset: RLDataset, renderer: Any, progress: Any):
        import tinker

        if len(dataset) == 0:
            raise ConfigurationError("the RL dataset is empty")
        self.cfg, self.dataset, self.renderer, self.progress = cfg, dataset, renderer, progress
        self.log = RunLog(cfg.log_path)
        self.end = len(dataset) if cfg.max_steps is None else min(len(dataset), cfg.max_steps)
        last = self.log.last_checkpoint()
        self.done = bool(last and last.get("final"))
        if self.done:
            return
        if last is not None:
            self.start = int(last["batch"])
            self.log.truncate_metrics(self.start)
            self.tc = _resolve(service_client.create_training_client_from_state_with_optimizer(last["state_path"]))
        else:
            self.start = 0
            self.log.write_config({"kind": "rl", **cfg.__dict__})
            if cfg.init_state_path:
                self.tc = _resolve(service_client.create_training_client_from_state(cfg.init_state_path))
            else:
                self.tc = _resolve(
                    service_client.create_lora_training_client(
                        base_model=cfg.model_name, rank=cfg.lora_rank, seed=cfg.seed,
                        user_metadata={"renderer_name": cfg.renderer_name},
                    )
                )
        self.reference = None
        if cfg.kl_penalty_coef > 0:
            self.reference = _resolve(
                service_client.create_sampling_client(base_model=cfg.kl_reference_model or cfg.model_name)
            )
        self.adam = tinker.AdamParams(learning_rate=cfg.learning_rate, beta1=0.9, beta2=0.95, eps=1e-8)
        self.sampler = _resolve(self.tc.save_weights_and_get_sampling_client())
        self.sampler_step = self.start

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
        data, _ = assemble_training_data(groups, [list(a) for a in advs])
        if self.reference is not None and data:
            data, kl_metrics = self._kl_penalty(data)
            metrics.update(kl_metrics)
        return data, metrics

    def _kl_penalty(self, data: list[Any]) -> tuple[list[Any], dict[str, float]]:
        def floats(d: Any, key: str) -> np.ndarray:
            return np.asarray(d.loss_fn_inputs[key].tolist(), dtype=np.float64)

        new_advs, metrics = incorporate_kl_penalty(
            [floats(d, "advantages") for d in data],
            [floats(d, "logprobs") for d in data],
            reference_logprobs(self.reference, data),
            [floats(d, "mask") for d in data],
            self.cfg.kl_penalty_coef,
            self.cfg.kl_discount_factor,
        )
        return [with_advantages(d, a) for d, a in zip(data, new_advs)], metrics

    def train_on(self, data: list[Any]) -> dict[str, float]:
        cfg = self.cfg
        if not data:
            return {"optim/skipped": 1.0}
        out_lps: list[np.ndarray] = []
        chunks = split_list(data, cfg.num_substeps)
        futures = []
        for chunk in chunks:
            fb = self.tc.forward_backward([remove_mask(d) for d in chunk], cfg.loss_fn, cfg.loss_fn_config)
            futures.append((chunk, fb, self.tc.optim_step(self.adam)))
        metrics: dict[str, float] = {}
        for _chunk, fb, optim in futures:
            res = fb.result()
            optim.result()
            out_lps += [np.asarray(o["logprobs"].tolist(), dtype=np.float64) for o in res.loss_fn_outputs]
            for k, v in res.metrics.items():
                metrics[f"train/{k}"] = metrics.get(f"train/{k}", 0.0) + float(v)
        sampling = [np.asarray(d.loss_fn_inputs["logprobs"].tolist(), dtype=np.float64) for d in data]
        mask = [np.asarray(d.loss_fn_inputs["mask"].tolist(), dtype=np.float64) for d in data]
        if any(m.sum() > 0 for m in mask):
            kl = kl_sample_train(sampling, out_lps, mask)
            metrics.update({k: float(v) for k, v in kl.items()})
        metrics["optim/num_datums"] = float(len(data))
        metrics["optim/lr"] = cfg.learning_rate
        return metrics

    def publish(self, step_done: int) -> None:
        """After step ``step_done`` trained: checkpoint if due, and new sampler weights."""
        nxt = step_done + 1
        if self.cfg.save_every > 0 and nxt % self.cfg.save_every == 0 and nxt < self.end:
            self._save(f"{nxt:06d}", nxt)
        self.sampler = _resolve(self.tc.save_weights_and_get_sampling_client())
        self.sampler_step = nxt

    def _save(self, name: str, batch: int, final: bool = False) -> None:
        state = self.tc.save_state(name).result().path
        sampler = self.tc.save_weights_for_sampler(name).result().path
        self.log.record_checkpoint(
            {"name": name, "batch": batch, "final": final or None, "state_path": state, "sampler_path": sampler}
        )

    def record(self, step: int, metrics: dict[str, float], groups: Sequence[TrajectoryGroup], t0: float) -> None:
        metrics["time/step"] = time.perf_counter() - t0
        metrics["progress"] = (step + 1) / self.end
        self.log.log_metrics(step, metrics)
        self._log_samples(step, groups)
        if self.progress is not None:
            self.progress(step, self.end, metrics)

    def _log_samples(self, step: int, groups: Sequence[TrajectoryGroup]) -> None:
        from cookbook.samples import log_rl_groups, sample_steps

        if self.cfg.samples_to_log <= 0 or step not in sample_steps(self.end):
            return
        shown = list(groups)[: self.cfg.samples_to_log]
        advs = compute_advantages([g.total_rewards() for g in shown], method=self.cfg.advantage_method)  # type: ignore[arg-type]
        log_rl_groups(self.log.dir, step, self.renderer, shown, [list(a) for a in advs])

    def finish(self) -> None:
        self._save("final", self.end, final=True)

    # ------------------------------------------------------------------------------------ modes
    def run_sync(self) -> None:
        for i in range(self.start, self.end):
            t0 = time.perf_counter()
            builders = self.dataset.get_batch(i)
            groups = asyncio.run(self._rollout_batch(builders, i))
            data, metrics = self.prepare(groups)
            metrics.update(self.train_on(data))
            self.publish(i)
            self.record(i, metrics, groups, t0)
        self.finish()

    async def _rollout_batch(self, builders: Sequence[EnvGroupBuilder], step: int) -> list[TrajectoryGroup]:
        sem = asyncio.Semaphore(self.cfg.max_concurrency)
        return await _gather_all([_rollout_group(b, self.sampler, self.cfg, step, gi, sem) for gi, b in enumerate(builders)])

    def run_stream(self) -> None:
        cfg = self.cfg
        for i in range(self.start, self.end):
            t0 = time.perf_counter()
            builders = list(self.dataset.get_batch(i))
            n_mb = max(1, min(cfg.num_minibatches, len(builders)))
            per_mb = -(-len(builders) // n_mb)
            groups_done: list[TrajectoryGroup] = []
            futures: list[tuple[list[Any], Any]] = []
            metrics: dict[str, float] = {}

            async def produce(i: int = i, builders: list[EnvGroupBuilder] = builders, per_mb: int = per_mb,
                              groups_done: list[TrajectoryGroup] = groups_done,
                              futures: list[tuple[list[Any], Any]] = futures,
                              metrics: dict[str, float] = metrics) -> None:
                sem = asyncio.Semaphore(cfg.max_concurrency)
                pending = [
                    asyncio.ensure_future(_rollout_group(b, self.sampler, cfg, i, gi, sem)) for gi, b in enumerate(builders)
                ]
                buffer: list[TrajectoryGroup] = []
                try:
                    for fut in asyncio.as_completed(pending):
                        buffer.append(await fut)
                        if len(buffer) == per_mb or len(groups_done) + len(buffer) == len(builders):
                            data, m = self.prepare(buffer)
                            metrics.update(m)
                            if data:
                                fb = self.tc.forward_backward([remove_mask(d) for d in data], cfg.loss_fn, cfg.loss_fn_config)
                                futures.append((data, fb))
                            groups_done.extend(buffer)
                            buffer = []
                except BaseException:
                    for p in pending:
                        p.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    raise

            asyncio.run(produce())
            optim = self.tc.optim_step(self.adam)
            for _data, fb in futures:
                res = fb.result()
                for k, v in res.metrics.items():
                    metrics[f"train/{k}"] = metrics.get(f"train/{k}", 0.0) + float(v)
            optim.result()
            metrics["env/all/reward/total"] = float(np.mean([r for g in groups_done for r in g.total_rewards()]))
            metrics["stream/minibatches"] = float(len(futures))
            self.publish(i)
            self.record(i, metrics, groups_done, t0)
        self.finish()

    def run_async(self) -> None:
        asyncio.run(self._run_async())
        self.finish()

    async def _run_async(self) -> None:
        cfg = self.cfg
        queue: asyncio.Queue[tuple[int, int, TrajectoryGroup]] = asyncio.Queue()
        published = asyncio.Condition()
        sem = asyncio.Semaphore(cfg.max_concurrency)
        state = {"step": self.start}

        async def worker(batch_idx: int) -> None:
            """Rolls out batch ``batch_idx`` once the current sampler is recent enough for it."""
            async with published:
                await published.wait_for(lambda: state["step"] >= batch_idx - cfg.max_steps_off_policy)
            sampler, produced_by = self.sampler, self.sampler_step
            builders = self.dataset.get_batch(batch_idx)
            groups = await _gather_all(
                [_rollout_group(b, sampler, cfg, batch_idx, gi, sem) for gi, b in enumerate(builders)]
            )
            for g in groups:
                await queue.put((produced_by, batch_idx, g))

        workers = [asyncio.ensure_future(worker(b)) for b in range(self.start, self.end)]
        try:
            for i in range(self.start, self.end):
                t0 = time.perf_counter()
                n_groups = len(self.dataset.get_batch(i))
                got: list[tuple[int, int, TrajectoryGroup]] = []
                while len(got) < n_groups:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait([getter, *[w for w in workers if not w.done()]],
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for w in workers:
                        if w.done() and not w.cancelled() and w.exception() is not None:
                            getter.cancel()
                            raise w.exception()  # type: ignore[misc]
                    if getter in done:
                        got.append(getter.result())
                    else:
                        getter.cancel()
                got.sort(key=lambda x: (x[0], x[1]))
                groups = [g for _, _, g in got]
                staleness = [i - produced for produced, _, _ in got]
                data, metrics = self.prepare(groups)
                metrics.update(await asyncio.to_thread(self.train_on, data))
                metrics.update({
                    "async/staleness_min": float(min(staleness)),
                    "async/staleness_mean": float(np.mean(staleness)),
                    "async/staleness_max": float(max(staleness)),
                })
                await asyncio.to_thread(self.publish, i)
                async with published:
                    state["step"] = i + 1
                    published.notify_all()
                self.record(i, metrics, groups, t0)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def _resolve(client_or_future: Any) -> Any:
    result = getattr(client_or_future, "result", None)
    return result() if callable(result) else client_or_future


def train_rl(config: RLConfig, service_client: Any, dataset: RLDataset, renderer: Any, progress: Any = None) -> RunLog:
    trainer = RLTrainer(config, service_client, dataset, renderer, progress)
    if not trainer.done:
        {"sync": trainer.run_sync, "stream": trainer.run_stream, "async": trainer.run_async}[config.mode]()
    return trainer.log

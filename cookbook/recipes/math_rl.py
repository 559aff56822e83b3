"""math_rl: RL with verifiable rewards on math problems whose answers go in ``\\boxed{}`` (graded with sympy).

Environment: :func:`cookbook.rl.envs.math_env` (tinker-cookbook ``MathEnv``): the question gets the suffix
``" Write your answer in \\boxed{} format."``; reward ``0.1·(format - 1) + correct`` where ``format`` = the
response ended with the stop sequence and contains a ``\\boxed{}``, ``correct`` = sympy-equal to the answer.
Group-centred advantages, ``importance_sampling`` loss, sync loop (:func:`cookbook.rl.train.train_rl`).

Data: ``problems`` (default: the bundled ``math_problems.jsonl``, 40 integer/fraction problems written for
this project), one ``{"problem", "answer"}`` per line, loaded through ``datasets``. Batch ``i`` draws
``batch_size`` problems with ``random.Random(f"{seed}:{i}")``; each is rolled out ``group_size`` times.

Warm-up (``warmup_sft_steps``): before RL, that many supervised steps on worked solutions ending in
``\\boxed{answer}`` (``solutions``, default: the bundled ``math_solutions.jsonl``, *different* problems from
the RL set), run by :func:`cookbook.supervised.train.train` in ``<log_path>/warmup``; RL then starts from
its final weights (``RLConfig.init_state_path``, fresh optimizer). Default: **16 steps on the mock** (a randomly
initialised toy model never produces ``\\boxed{`` by chance, so RL would get no signal) and **0 on Tinker**
(an instruct model already answers in ``\\boxed{}``).

* Offline: the embedded mock, ``cookbook/tiny-chat``, lr 5e-2, ``max_tokens`` 24. The toy model sees only a
  decayed summary of the prompt, so what RL learns there is mostly the format and the stop token plus the
  answer distribution; the point is that the loop, the grader and the reward plumbing are exercised end to end.
* On Tinker: ``meta-llama/Llama-3.1-8B-Instruct``, lr 4e-5, ``max_tokens`` 512, no warm-up.

Resume: rerunning the same command skips a finished warm-up (its log has a ``final`` checkpoint), then the RL
loop continues from its last checkpoint (weights + optimizer, ``batch`` = the next step); ``init_state_path``
only matters for a fresh RL run. After RL's ``final`` checkpoint a rerun does nothing.
"""

from __future__ import annotations

import functools
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chz

from cookbook.errors import DataError
from cookbook.recipes.common import Progress, bundled, parse_config, print_summary, tinker_service
from cookbook.renderers.base import Message, RendererProtocol
from cookbook.rl.envs import ProblemGroupBuilder, math_env
from cookbook.rl.types import EnvGroupBuilder
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/math_rl"
    model_name: str | None = None  # default: cookbook/tiny-chat on the mock, Llama-3.1-8B-Instruct on Tinker
    renderer_name: str | None = None
    problems: str | None = None  # {"problem", "answer"} JSONL (or hub dataset); default: bundled
    solutions: str | None = None  # {"problem", "solution"} JSONL for the warm-up; default: bundled
    warmup_sft_steps: int | None = None  # default: 16 on the mock, 0 on Tinker
    warmup_learning_rate: float = 5e-2
    learning_rate: float | None = None  # default: 5e-2 on the mock, 4e-5 on Tinker
    batch_size: int = 8  # groups (problems) per step
    group_size: int = 8
    n_batches: int = 20
    max_tokens: int | None = None  # default: 24 on the mock, 512 on Tinker
    temperature: float = 1.0
    lora_rank: int = 8
    loss_fn: str = "importance_sampling"
    mode: str = "sync"  # sync | stream | async
    save_every: int = 5
    grader_timeout: float = 1.0
    seed: int = 0
    base_url: str | None = None
    wandb_project: str | None = None  # set: mirror metrics to W&B (the 'wandb' extra)
    wandb_name: str | None = None


ONLINE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEYS = ("env/all/reward/total", "env/all/correct", "env/all/format", "optim/kl_sample_train_v1")
MOCK = {"warmup_sft_steps": 16, "learning_rate": 5e-2, "max_tokens": 24}
ONLINE = {"warmup_sft_steps": 0, "learning_rate": 4e-5, "max_tokens": 512}
SUFFIX = " Write your answer in \\boxed{} format."  # what math_env appends to the question


def _rows(source: str | Path, needed: Sequence[str]) -> list[dict[str, str]]:
    import datasets

    p = Path(source)
    ds = datasets.load_dataset("json", data_files=str(p), split="train") if p.exists() else datasets.load_dataset(str(source), split="train")
    out = []
    for i, row in enumerate(ds):
        missing = [k for k in needed if not isinstance(row.get(k), str) or not row.get(k)]
        if missing:
            raise DataError(f"{source} row {i}: needs non-empty string fields {', '.join(missing)}")
        out.append({k: str(row[k]) for k in needed})
    if not out:
        raise DataError(f"{source}: no rows")
    return out


def load_problems(source: str | Path) -> list[tuple[str, str]]:
    """``(problem, answer)`` pairs from ``{"problem", "answer"}`` rows."""
    return [(r["problem"], r["answer"]) for r in _rows(source, ("problem", "answer"))]


def load_solution_conversations(source: str | Path) -> list[list[Message]]:
    """Warm-up conversations: the problem (with the MathEnv suffix) and its worked solution."""
    from cookbook.grading import extract_boxed

    out: list[list[Message]] = []
    for i, r in enumerate(_rows(source, ("problem", "solution"))):
        try:
            extract_boxed(r["solution"])
        except ValueError as exc:
            raise DataError(f"{source} row {i}: the solution has no \\boxed{{}} answer ({exc})") from exc
        out.append([{"role": "user", "content": r["problem"] + SUFFIX}, {"role": "assistant", "content": r["solution"]}])
    return out


@dataclass
class MathDataset:
    """Batch ``i``: ``batch_size`` problems drawn with ``random.Random(f"{seed}:{i}")``, ``group_size`` rollouts each."""

    problems: list[tuple[str, str]]
    renderer: RendererProtocol
    batch_size: int
    group_size: int
    n_batches: int
    seed: int = 0
    grader_timeout: float = 1.0

    def __len__(self) -> int:
        return self.n_batches

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        rng = random.Random(f"{self.seed}:{index}")
        picks = rng.sample(self.problems, min(self.batch_size, len(self.problems)))
        return [
            ProblemGroupBuilder(functools.partial(math_env, self.renderer, q, a, self.grader_timeout), self.group_size, ["math"])
            for q, a in picks
        ]


def run_warmup(cfg: Config, service: Any, model_name: str, renderer_name: str, renderer: Any, steps: int) -> str:
    """The SFT warm-up in ``<log_path>/warmup``; returns its final state path (resumes / skips like any SL run)."""
    from cookbook.runlog import RunLog
    from cookbook.supervised.data import ConversationDataset
    from cookbook.supervised.train import SupervisedConfig, train

    convs = load_solution_conversations(cfg.solutions or bundled("math_solutions.jsonl"))
    batch = min(8, len(convs))
    dataset = ConversationDataset(convs, batch)
    sl_cfg = SupervisedConfig(
        log_path=str(Path(cfg.log_path) / "warmup"), model_name=model_name, renderer_name=renderer_name,
        learning_rate=cfg.warmup_learning_rate, lr_schedule="constant", num_epochs=-(-steps // len(dataset)),
        batch_size=batch, max_length=256, lora_rank=cfg.lora_rank, save_every=0, eval_every=0, max_steps=steps,
        seed=cfg.seed,
    )
    print(f"math_rl: SFT warm-up, {steps} steps on worked solutions -> {sl_cfg.log_path}", file=sys.stderr)
    log = train(sl_cfg, service.client, dataset, (), renderer, Progress(("train_mean_nll",)))
    final = RunLog(log.dir).last_checkpoint()
    if final is None or not final.get("final"):
        raise DataError(f"{log.dir}: the warm-up finished without a final checkpoint")
    return str(final["state_path"])


def main(cfg: Config) -> dict[str, object]:
    from cookbook.recipes.common import resolve_model
    from cookbook.rl.train import RLConfig, train_rl

    problems = load_problems(cfg.problems or bundled("math_problems.jsonl"))
    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        model_name, renderer_name, renderer = resolve_model(cfg.model_name, cfg.renderer_name, service, ONLINE_MODEL)
        defaults = MOCK if service.kind == "mock" else ONLINE
        steps = int(cfg.warmup_sft_steps if cfg.warmup_sft_steps is not None else defaults["warmup_sft_steps"])
        init = run_warmup(cfg, service, model_name, renderer_name, renderer, steps) if steps > 0 else None
        dataset = MathDataset(problems, renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.seed, cfg.grader_timeout)
        rl_cfg = RLConfig(
            log_path=cfg.log_path, model_name=model_name, renderer_name=renderer_name,
            learning_rate=float(cfg.learning_rate if cfg.learning_rate is not None else defaults["learning_rate"]),
            max_tokens=int(cfg.max_tokens if cfg.max_tokens is not None else defaults["max_tokens"]),
            temperature=cfg.temperature, lora_rank=cfg.lora_rank, loss_fn=cfg.loss_fn, save_every=cfg.save_every,
            seed=cfg.seed, mode=cfg.mode,  # type: ignore[arg-type]
            init_state_path=init, extra={"recipe": "math_rl", "warmup_sft_steps": steps},
        )
        train_rl(rl_cfg, service.client, dataset, renderer, Progress(KEYS))
        return print_summary("math_rl", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])

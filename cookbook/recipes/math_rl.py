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
its final weights (``load_checkpoint_path``, fresh optimizer; an explicit ``load_checkpoint_path=`` skips the
warm-up). Default: **16 steps on the mock** (a randomly
initialised toy model never produces ``\\boxed{`` by chance, so RL would get no signal) and **0 on Tinker**
(an instruct model already answers in ``\\boxed{}``).

* Offline: the embedded mock, ``cookbook/tiny-chat``, lr 2e-2 (at 5e-2 the policy collapses onto one answer
  within ~15 steps: format 1.0, correct 0, every group constant), ``max_tokens`` 24. The toy model sees only a
  decayed summary of the prompt, so what RL learns there is mostly the format and the stop token plus the
  answer distribution; the point is that the loop, the grader and the reward plumbing are exercised end to end.
* On Tinker: ``meta-llama/Llama-3.1-8B-Instruct``, lr 4e-5, ``max_tokens`` 512, no warm-up.

Resume: rerunning the same command skips a finished warm-up (its log has a ``final`` checkpoint), then the RL
loop continues from its last checkpoint (weights + optimizer, ``batch`` = the next step);
``load_checkpoint_path`` only matters for a fresh RL run. After RL's ``final`` checkpoint a rerun does nothing.
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
from cookbook.recipes.common import (
    Progress,
    bundled,
    main_guard,
    make_renderer,
    print_summary,
    run_recipe,
    sft_phase,
    with_models,
)
from cookbook.renderers.base import Message, RendererProtocol
from cookbook.rl.envs import ProblemGroupBuilder, math_env
from cookbook.rl.train import RLConfig, validate_rl_config
from cookbook.rl.types import EnvGroupBuilder


@chz.chz
class Config(RLConfig):
    log_path: str = chz.field(default="runs/math_rl", doc="run directory")
    problems: str | None = chz.field(default=None, doc='{"problem", "answer"} JSONL (or hub dataset); None: bundled')
    solutions: str | None = chz.field(default=None, doc='{"problem", "solution"} JSONL for the warm-up; None: bundled')
    warmup_sft_steps: int | None = chz.field(default=None, doc="SFT warm-up steps (None: 16 on the mock, 0 on Tinker)")
    warmup_learning_rate: float = chz.field(default=5e-2, doc="learning rate of the warm-up")
    learning_rate: float | None = chz.field(default=None, doc="Adam learning rate (None: 2e-2 on the mock, 4e-5 on Tinker)")  # type: ignore[assignment]
    batch_size: int = chz.field(default=8, doc="groups (problems) per step")
    group_size: int = chz.field(default=8, doc="rollouts per problem")
    n_batches: int = chz.field(default=20, doc="training steps (dataset batches)")
    max_tokens: int | None = chz.field(default=None, doc="max sampled tokens (None: 24 on the mock, 512 on Tinker)")  # type: ignore[assignment]
    save_every: int = chz.field(default=5, doc="checkpoint every N steps (0: only the final one)")
    eval_every: int = chz.field(default=10, doc="evaluate every N steps (0: only at the end)")
    eval_size: int = chz.field(default=8, doc="problems of the accuracy evaluator (0: none)")
    grader_timeout: float = chz.field(default=1.0, doc="seconds per sympy grading")


ONLINE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEYS = ("env/all/reward/total", "env/all/correct", "env/all/format", "optim/kl_sample_train_v1")
MOCK = {"warmup_sft_steps": 16, "learning_rate": 2e-2, "max_tokens": 24}
ONLINE = {"warmup_sft_steps": 0, "learning_rate": 4e-5, "max_tokens": 512}
SUFFIX = " Write your answer in \\boxed{} format."  # what math_env appends to the question


def _rows(source: str | Path, needed: Sequence[str]) -> list[dict[str, str]]:
    from cookbook.supervised.data import load_rows

    out = []
    for where, row in load_rows(source):
        missing = [k for k in needed if not isinstance(row, dict) or not isinstance(row.get(k), str) or not row.get(k)]
        if missing:
            raise DataError(f"{where}: needs non-empty string fields {', '.join(missing)}")
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
    for i, r in enumerate(_rows(source, ("problem", "solution")), 1):
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


def run_warmup(cfg: Config, service: Any, renderer: Any, steps: int) -> str:
    """The SFT warm-up on worked solutions in ``<log_path>/warmup``; returns its final state path."""
    convs = load_solution_conversations(cfg.solutions or bundled("math_solutions.jsonl"))
    return sft_phase(cfg, service, renderer, convs, subdir="warmup", steps=steps,
                     learning_rate=cfg.warmup_learning_rate, seed=cfg.seed, recipe="math_rl",
                     what="SFT warm-up on worked solutions")


def _resolve(cfg: Config, kind: str) -> Config:
    out: Config = with_models(cfg, kind, ONLINE_MODEL, None, **{k: (MOCK[k], ONLINE[k]) for k in MOCK})
    validate_rl_config(out)
    return out


def _prepare(cfg: Config) -> Any:
    problems = load_problems(cfg.problems or bundled("math_problems.jsonl"))
    if cfg.warmup_sft_steps and not cfg.load_checkpoint_path:
        load_solution_conversations(cfg.solutions or bundled("math_solutions.jsonl"))  # fail early on bad rows
    return problems


def _body(cfg: Config, service: Any, problems: Any) -> dict[str, object]:
    import chz

    from cookbook.rl.evaluators import ProblemEvaluator
    from cookbook.rl.train import train_rl

    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    steps = int(cfg.warmup_sft_steps or 0)
    loop_cfg = cfg
    if steps > 0 and not cfg.load_checkpoint_path:
        loop_cfg = chz.replace(cfg, load_checkpoint_path=run_warmup(cfg, service, renderer, steps))
    dataset = MathDataset(problems, renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.seed,
                          cfg.grader_timeout)
    evaluators = []
    if cfg.eval_size > 0:
        held = MathDataset(problems, renderer, min(cfg.eval_size, len(problems)), 1, 1, cfg.seed + 10_000,
                           cfg.grader_timeout).get_batch(0)
        evaluators.append(ProblemEvaluator(held, int(cfg.max_tokens or 0), "test", cfg.temperature, cfg.seed))
    train_rl(loop_cfg, service.client, dataset, renderer, Progress(KEYS), evaluators)
    return print_summary("math_rl", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("math_rl", Config, argv, _body, kind="rl", resolve=_resolve, prepare=_prepare, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "math_rl"))

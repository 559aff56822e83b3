"""Problem environments: one question, one answer, a format reward and a correctness reward.

``reward = format_coef * (correct_format - 1) + correct_answer`` (tinker-cookbook ``ProblemEnv``): 1 for a
well-formed correct answer, 0.9 for a malformed correct one, 0 for a well-formed wrong one, -0.1 otherwise.
A response is well formed when it ended with the renderer's stop sequence (``require_stop_sequence=True``)
and the problem's format check passes.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cookbook.grading import extract_boxed, last_integer, safe_grade
from cookbook.renderers.base import Message, ParseTermination, RendererProtocol, text_of
from cookbook.rl.types import Action, Env, EnvGroupBuilder, StepResult, StopCondition


class ProblemEnv(Env):
    def __init__(
        self,
        renderer: RendererProtocol,
        question: str,
        check_answer: Callable[[str], bool],
        check_format: Callable[[str], bool] = lambda _: True,
        convo_prefix: Sequence[Message] = (),
        format_coef: float = 0.1,
        require_stop_sequence: bool = True,
    ):
        self.renderer = renderer
        self.question = question
        self._check_answer = check_answer
        self._check_format = check_format
        self.convo_prefix = list(convo_prefix)
        self.format_coef = format_coef
        self.require_stop_sequence = require_stop_sequence

    async def initial_observation(self) -> tuple[Any, StopCondition]:
        messages: list[Message] = [*self.convo_prefix, {"role": "user", "content": self.question}]
        return self.renderer.build_generation_prompt(messages), self.renderer.get_stop_sequences()

    async def step(self, action: Action) -> StepResult:
        message, termination = self.renderer.parse_response(action)
        text = text_of(message["content"])
        if self.require_stop_sequence:
            well_formed = termination is ParseTermination.STOP_SEQUENCE
        else:
            well_formed = termination.is_clean
        correct_format = float(well_formed and self._check_format(text))
        correct = float(self._check_answer(text))
        reward = self.format_coef * (correct_format - 1.0) + correct
        from tinker import ModelInput

        return StepResult(
            reward=reward,
            episode_done=True,
            next_observation=ModelInput.empty(),
            next_stop_condition=self.renderer.get_stop_sequences(),
            metrics={"format": correct_format, "correct": correct},
        )


@dataclass
class ProblemGroupBuilder(EnvGroupBuilder):
    """``num_envs`` copies of the *same* problem (the thunk must not draw a new problem per call)."""

    env_thunk: Callable[[], Env]
    num_envs: int
    tags: list[str] = field(default_factory=list)

    async def make_envs(self) -> Sequence[Env]:
        return [self.env_thunk() for _ in range(self.num_envs)]

    def logging_tags(self) -> list[str]:
        return list(self.tags)


# ----------------------------------------------------------------------------------------------- arithmetic


def arithmetic_env(renderer: RendererProtocol, x: int, y: int) -> ProblemEnv:
    """``What is x + y?``; the answer is the last integer of the response (format always passes)."""
    answer = x + y
    return ProblemEnv(
        renderer,
        f"What is {x} + {y}?",
        check_answer=lambda text: last_integer(text) == answer,
        convo_prefix=[{"role": "user", "content": "What is 4 + 5?"}, {"role": "assistant", "content": "9"}],
    )


@dataclass
class ArithmeticDataset:
    """Synthetic addition problems, seeded by batch index (``x, y`` in ``[0, max_operand]``)."""

    renderer: RendererProtocol
    batch_size: int
    group_size: int
    n_batches: int
    max_operand: int = 100
    seed: int = 0

    def __len__(self) -> int:
        return self.n_batches

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        rng = random.Random(f"{self.seed}:{index}")
        out: list[EnvGroupBuilder] = []
        for _ in range(self.batch_size):
            x, y = rng.randint(0, self.max_operand), rng.randint(0, self.max_operand)
            out.append(ProblemGroupBuilder(functools.partial(arithmetic_env, self.renderer, x, y), self.group_size, ["arithmetic"]))
        return out


# ----------------------------------------------------------------------------------------------- math


def math_env(renderer: RendererProtocol, problem: str, answer: str, timeout: float = 1.0) -> ProblemEnv:
    """A MATH-style problem: the response must put its answer in ``\\boxed{}``; graded with sympy."""

    def boxed(text: str) -> str | None:
        try:
            return extract_boxed(text)
        except ValueError:
            return None

    return ProblemEnv(
        renderer,
        problem + " Write your answer in \\boxed{} format.",
        check_answer=lambda text: safe_grade(boxed(text), answer, "sympy", timeout),
        check_format=lambda text: boxed(text) is not None,
    )

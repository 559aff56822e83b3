"""An inspect-ai task evaluated against a Tinker sampling client, offline on the mock (the ``inspect`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("inspect_ai", reason="inspect-ai is not installed (optional extra 'inspect')")

from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.scorer import match
from inspect_ai.solver import generate

from cookbook.mock.tiny_chat import TINY_CHAT, tiny_chat_dir
from cookbook.renderers import get_renderer

pytestmark = pytest.mark.e2e

QUESTIONS = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8"), ("What is 1 + 0?", "1")]


def _task() -> Task:
    return Task(dataset=[Sample(input=q, target=a) for q, a in QUESTIONS], solver=generate(), scorer=match())


class _Recording:
    """The real sampling client, remembering the prompt tokens of every request."""

    def __init__(self, client: Any):
        self.client = client
        self.prompts: list[list[int]] = []

    async def sample(self, prompt: Any, **kwargs: Any) -> Any:
        self.prompts.append(prompt.to_ints())
        return await self.client.sample(prompt=prompt, **kwargs)


def _model(tinker_mock: Any) -> tuple[Any, Any, _Recording]:
    from cookbook.inspect_tinker import tinker_model

    renderer = get_renderer("llama3", str(tiny_chat_dir()))
    sampler = _Recording(tinker_mock.service_client().create_sampling_client(base_model=TINY_CHAT).result())
    return tinker_model(sampler, renderer, TINY_CHAT, max_tokens=8, temperature=1.0), renderer, sampler


def test_an_inspect_task_runs_on_a_tinker_sampling_client(tinker_mock: Any, tmp_path: Path) -> None:
    model, renderer, sampler = _model(tinker_mock)
    # the mock returns exactly these completions: two right answers, one wrong, each ended by the stop token
    stop = renderer.get_stop_sequences()
    answers = ["5", "3", "1"]
    tinker_mock.script_samples([renderer.enc.encode(a) + list(stop) for a in answers])
    logs = eval(_task(), model=model, log_dir=str(tmp_path / "inspect"), display="none", max_samples=1,
                max_connections=1)
    (log,) = logs
    assert log.status == "success", log.error
    assert log.results is not None
    accuracy = log.results.scores[0].metrics["accuracy"].value
    assert accuracy == pytest.approx(2 / 3)
    outputs = {s.input: s.output.completion for s in log.samples or []}
    assert sorted(outputs.values()) == sorted(answers)
    # one request per sample, carrying the renderer's generation prompt of its question
    expected = [renderer.generation_prompt_tokens([{"role": "user", "content": q}]) for q, _ in QUESTIONS]
    assert sorted(sampler.prompts) == sorted(expected)
    assert len(tinker_mock.requests_to("asample")) == len(QUESTIONS)
    assert list((tmp_path / "inspect").glob("*.eval")), "inspect wrote no log"


def test_unscripted_samples_come_from_the_model(tinker_mock: Any, tmp_path: Path) -> None:
    model, _, _ = _model(tinker_mock)
    logs = eval(_task(), model=model, log_dir=str(tmp_path / "inspect"), display="none")
    (log,) = logs
    assert log.status == "success", log.error
    usage = [s.output.usage for s in log.samples or []]
    assert all(u is not None and u.input_tokens > 0 and 0 < u.output_tokens <= 8 for u in usage)

"""Gemma 3 renderer against ``specs/renderers/gemma3.yaml`` and the real Gemma 3 chat template.

* every spec check of the conformance runner (decoded supervised text with trained spans, decoded generation
  prompt, token counts, raises, parse cases, stop sequences, claims; property checks on a few random
  conversations);
* the generation prompt's TOKENS against ``apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`` with the case's declared template edits (as text for ``compare: text`` deviations);
* behaviour tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cookbook.conformance.oracle import Codec, TemplateOracle
from cookbook.conformance.renderer_runner import RunOptions, run_spec
from cookbook.conformance.spec import (
    Case,
    Spec,
    apply_edits,
    load_spec,
    to_messages,
    to_template_messages,
    to_template_tools,
)
from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, TrainOnWhat
from cookbook.renderers.base import model_input_tokens
from cookbook.renderers.gemma3 import Gemma3Renderer
from cookbook.tokenizers import get_tokenizer

SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "renderers" / "gemma3.yaml"


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="module")
def tok(spec: Spec) -> Any:
    return get_tokenizer(spec.tokenizer)


@pytest.fixture(scope="module")
def renderer(tok: Any) -> Gemma3Renderer:
    return Gemma3Renderer(tok)


def template_prompt_tokens(spec: Spec, case: Case, tok: Any) -> tuple[str, list[int]]:
    """The oracle's generation prompt (template, then the case's declared edits, then the prefill)."""
    oracle = TemplateOracle(tok, spec.oracle.template_kwargs)
    codec = Codec(tok)
    opts = spec.oracle.messages
    r = oracle.render(
        to_template_messages(case.prompt_messages, opts),
        True,
        to_template_tools(case.tools, opts) or None,
        case.template_kwargs,
    )
    (text,) = apply_edits([r.text], [spec.deviations[d] for d in case.deviations], strict=False)
    tokens = r.tokens if text == r.text else codec.encode_special(text)
    if case.prefill:
        text += case.prefill
        tokens = tokens + codec.encode_literal(case.prefill)
    return text, tokens


def test_spec_conformance(spec: Spec, tok: Any, renderer: Gemma3Renderer) -> None:
    results = run_spec(renderer, spec, tok, options=RunOptions(properties=True, examples=8))
    failed = [f"{r.case} {r.check}: {r.message}\n{r.detail}" for r in results if r.status == "FAIL"]
    assert not failed, "\n\n".join(failed)
    assert sum(r.status == "PASS" for r in results) > 40


def test_generation_prompt_tokens_equal_the_template(spec: Spec, tok: Any, renderer: Gemma3Renderer) -> None:
    codec = Codec(tok)
    checked = 0
    for case in spec.cases:
        if case.expect.generation_prompt is None or case.expect.raises is not None:
            continue
        text, tokens = template_prompt_tokens(spec, case, tok)
        got = model_input_tokens(
            renderer.build_generation_prompt(to_messages(case.prompt_messages), prefill=case.prefill)
        )
        if any(spec.deviations[d].compare == "text" for d in case.deviations):
            assert codec.decode(got) == text, case.id
        else:
            assert got == tokens, f"{case.id}: {codec.decode(got)!r} != {text!r}"
        checked += 1
    assert checked >= 15


def test_refuses_tools_with_a_clear_error(renderer: Gemma3Renderer) -> None:
    msgs = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [ToolCall("get_weather", '{"city": "Paris"}')]},
    ]
    with pytest.raises(RendererError, match="no tool-calling format"):
        renderer.build_supervised_example(msgs)  # type: ignore[arg-type]
    assert not hasattr(renderer, "create_conversation_prefix_with_tools")


def test_refuses_misplaced_system_and_thinking(renderer: Gemma3Renderer) -> None:
    with pytest.raises(RendererError, match="system message"):
        renderer.build_generation_prompt(
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]
        )
    with pytest.raises(RendererError, match="followed by a user"):
        renderer.build_generation_prompt([{"role": "system", "content": "b"}])
    with pytest.raises(RendererError, match="thinking"):
        renderer.build_supervised_example(
            [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "b"}],
                },
            ]
        )


def test_system_text_is_trained_with_system_messages(renderer: Gemma3Renderer) -> None:
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    tokens, weights = renderer.supervised_tokens(msgs, TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES)  # type: ignore[arg-type]
    trained = renderer.decode([t for t, w in zip(tokens, weights) if w])
    assert trained == "S\n\nU<end_of_turn>"


def test_parse(renderer: Gemma3Renderer, tok: Any) -> None:
    codec = Codec(tok)
    msg, term = renderer.parse_response(codec.encode_special("Hi 👋<end_of_turn>"))
    assert (msg["content"], term) == ("Hi 👋", ParseTermination.STOP_SEQUENCE)
    msg, term = renderer.parse_response(codec.encode_special("Hi<eos>"))
    assert (msg["content"], term) == ("Hi", ParseTermination.EOS)
    assert renderer.get_stop_sequences() == [codec.token_id("<end_of_turn>")]


def test_extension_property_holds_on_a_multi_turn_conversation(renderer: Gemma3Renderer) -> None:
    msgs: list[Any] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]
    full = renderer.supervised_tokens([*msgs[:3]], TrainOnWhat.ALL_MESSAGES)[0]
    prompt = model_input_tokens(renderer.build_generation_prompt(msgs))
    assert prompt[: len(full)] == full

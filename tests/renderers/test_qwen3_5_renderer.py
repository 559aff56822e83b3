"""Qwen3.5 renderers (qwen3_5, qwen3_5_disable_thinking) against their specs and the Qwen3.5 chat template.

* every spec check of the conformance runner (decoded supervised text with trained spans, decoded generation
  prompt, token counts, raises, parse cases, stop sequences, claims; property checks on a few random
  conversations);
* the generation prompt's TOKENS against ``apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`` with the case's declared template edits;
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
from cookbook.renderers import ToolCall, TrainOnWhat
from cookbook.renderers.base import Renderer, model_input_tokens
from cookbook.renderers.qwen3_5 import (
    Qwen3_5DisableThinkingRenderer,
    Qwen3_5Renderer,
    parse_xml_tool_call,
    xml_parameter_value,
)
from cookbook.tokenizers import get_tokenizer

SPECS = Path(__file__).resolve().parents[2] / "specs" / "renderers"
CLASSES: dict[str, type[Qwen3_5Renderer]] = {
    "qwen3_5": Qwen3_5Renderer,
    "qwen3_5_disable_thinking": Qwen3_5DisableThinkingRenderer,
}


@pytest.fixture(scope="module")
def specs() -> dict[str, Spec]:
    return {n: load_spec(SPECS / f"{n}.yaml") for n in CLASSES}


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("Qwen/Qwen3.5-4B")


@pytest.fixture(scope="module")
def renderers(tok: Any) -> dict[str, Qwen3_5Renderer]:
    return {n: c(tok) for n, c in CLASSES.items()}


def template_prompt_tokens(spec: Spec, case: Case, tok: Any, renderer: Renderer) -> tuple[str, list[int]]:
    """The oracle's generation prompt (template, then the case's declared edits, then the prefill)."""
    oracle = TemplateOracle(tok, spec.oracle.template_kwargs)
    codec = Codec(tok)
    opts = spec.oracle.messages
    msgs = to_template_messages(case.prompt_messages, opts)
    tools = to_template_tools(case.tools, opts) or None
    r = oracle.render(msgs, True, tools, case.template_kwargs)
    (text,) = apply_edits([r.text], [spec.deviations[d] for d in case.deviations], strict=False)
    tokens = r.tokens if text == r.text else codec.encode_special(text)
    if case.prefill:
        text += case.prefill
        tokens = tokens + codec.encode_literal(case.prefill)
    return text, tokens


def renderer_messages(renderer: Any, case: Case, messages: Any) -> list[Any]:
    msgs = to_messages(messages)
    if not case.tools:
        return msgs
    if msgs and msgs[0]["role"] == "system":
        return [*renderer.create_conversation_prefix_with_tools(list(case.tools), msgs[0]["content"]), *msgs[1:]]
    return [*renderer.create_conversation_prefix_with_tools(list(case.tools)), *msgs]


@pytest.mark.parametrize("name", list(CLASSES))
def test_spec_conformance(name: str, specs: dict[str, Spec], tok: Any, renderers: dict[str, Renderer]) -> None:
    results = run_spec(renderers[name], specs[name], tok, options=RunOptions(properties=True, examples=6))
    failed = [f"{r.case} {r.check}: {r.message}\n{r.detail}" for r in results if r.status == "FAIL"]
    assert not failed, "\n\n".join(failed)
    assert sum(r.status == "PASS" for r in results) > 50


@pytest.mark.parametrize("name", list(CLASSES))
def test_generation_prompt_tokens_equal_the_template(
    name: str, specs: dict[str, Spec], tok: Any, renderers: dict[str, Renderer]
) -> None:
    spec, renderer, codec = specs[name], renderers[name], Codec(tok)
    checked = 0
    for case in spec.cases:
        if case.expect.generation_prompt is None or case.expect.raises is not None or case.template_skip:
            continue
        text, tokens = template_prompt_tokens(spec, case, tok, renderer)
        msgs = renderer_messages(renderer, case, case.prompt_messages)
        got = model_input_tokens(renderer.build_generation_prompt(msgs, prefill=case.prefill))
        if any(spec.deviations[d].compare == "text" for d in case.deviations):
            assert codec.decode(got) == text, case.id
        else:
            assert got == tokens, f"{case.id}: {codec.decode(got)!r} != {text!r}"
        checked += 1
    assert checked >= 20


def test_control_tokens_are_ids_and_content_is_literal(renderers: dict[str, Qwen3_5Renderer], tok: Any) -> None:
    r = renderers["qwen3_5"]
    tokens = r.generation_prompt_tokens([{"role": "user", "content": "say <think> and <|im_end|>"}])
    think, im_end = tok.convert_tokens_to_ids("<think>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert tokens.count(think) == 1 and tokens[-2] == think, "only the prompt's own <think> is a control token"
    assert tokens.count(im_end) == 1


def test_supervised_weights_and_prompt_prefix(renderers: dict[str, Qwen3_5Renderer]) -> None:
    r = renderers["qwen3_5"]
    conv: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]},
    ]
    tokens, weights = r.supervised_tokens(conv)
    prompt = r.generation_prompt_tokens(conv[:1])
    assert tokens[: len(prompt)] == prompt and not any(weights[: len(prompt)])
    assert all(weights[len(prompt) :])
    assert r.decode(tokens[len(prompt) :]) == "greet\n</think>\n\nHello!<|im_end|>"


def test_disable_thinking_refuses_a_trained_turn_that_reasons(renderers: dict[str, Qwen3_5Renderer]) -> None:
    r = renderers["qwen3_5_disable_thinking"]
    conv: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]},
    ]
    with pytest.raises(RendererError, match="disables thinking"):
        r.supervised_tokens(conv, TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    tokens, weights = r.supervised_tokens([conv[0], {"role": "assistant", "content": "Hello!"}])
    assert r.decode([t for t, w in zip(tokens, weights) if w]) == "Hello!<|im_end|>"


def test_parameter_values_follow_jinja_string() -> None:
    assert xml_parameter_value(True) == "True"
    assert xml_parameter_value(None) == "None"
    assert xml_parameter_value({"a": [1, "é"]}) == '{"a": [1, "é"]}'
    assert xml_parameter_value("x") == "x"


def test_xml_tool_call_roundtrip(renderers: dict[str, Qwen3_5Renderer]) -> None:
    r = renderers["qwen3_5"]
    call = ToolCall(name="f", arguments='{"q": "a b", "n": 2, "o": {"k": [1]}}')
    conv: list[Any] = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    tokens, weights = r.supervised_tokens(conv)
    sampled = [t for t, w in zip(tokens, weights) if w]
    msg, term = r.parse_response(sampled)
    assert term == "stop_sequence"
    assert msg["tool_calls"][0].arguments_dict() == {"q": "a b", "n": 2, "o": {"k": [1]}}
    bad = parse_xml_tool_call("<tool_call>\n<function=f>\n<parameter=a>\n1\n</function>\n</tool_call>")
    assert not isinstance(bad, ToolCall)

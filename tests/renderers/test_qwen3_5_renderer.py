"""Qwen3.5 renderers (qwen3_5, qwen3_5_disable_thinking) against their specs and the Qwen3.5 chat template.

* every spec check of the conformance runner (decoded supervised text with trained spans, decoded generation
  prompt, token counts, raises, parse cases, stop sequences, claims; property checks on a few random
  conversations);
* the generation prompt's TOKENS against ``apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`` with the case's declared template edits;
* behaviour tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from cookbook.conformance.spec import (
    Spec,
    load_spec,
)
from cookbook.data import specs_dir
from cookbook.errors import RendererError
from cookbook.renderers import ToolCall, TrainOnWhat
from cookbook.renderers.qwen3_5 import (
    Qwen3_5Renderer,
    parse_xml_tool_call,
    xml_parameter_value,
)
from cookbook.tokenizers import get_tokenizer

SPECS = specs_dir("renderers")
CLASSES: dict[str, dict[str, bool]] = {  # registered name -> Qwen3_5Renderer options
    "qwen3_5": {},
    "qwen3_5_disable_thinking": {"enable_thinking": False},
}


@pytest.fixture(scope="module")
def specs() -> dict[str, Spec]:
    return {n: load_spec(SPECS / f"{n}.yaml") for n in CLASSES}


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("Qwen/Qwen3.5-4B")


@pytest.fixture(scope="module")
def renderers(tok: Any) -> dict[str, Qwen3_5Renderer]:
    return {n: Qwen3_5Renderer(tok, **o) for n, o in CLASSES.items()}


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

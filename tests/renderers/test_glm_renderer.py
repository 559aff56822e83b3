"""GLM renderer (glm: the GLM-4.7-Flash format, thinking on): behaviour and parsing.

The spec cases, goldens and property checks run through tests/renderers/test_conform_runner.py; these tests pin
the rules behind the spec's deviations (the produced turn continues the prompt's <think>, the terminator role token
belongs to the assistant) and the parser, with the GLM tokenizer exported from tml-renderers (provisioned on
demand: the first run builds it in ~2 minutes).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, TrainOnWhat
from cookbook.renderers.base import Message
from cookbook.renderers.glm import GlmRenderer, parse_glm_tool_call
from cookbook.tokenizers import get_tokenizer

WEATHER = {
    "name": "get_weather",
    "description": "Weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def glm() -> GlmRenderer:
    return GlmRenderer(get_tokenizer("zai-org/GLM-4.7-Flash"))


def _encode(r: GlmRenderer, text: str) -> list[int]:
    return list(r.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)


def _trained(r: GlmRenderer, msgs: list[Message], mode: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_MESSAGE) -> str:
    tokens, weights = r.supervised_tokens(msgs, mode)
    return r.decode([t for t, w in zip(tokens, weights) if w])


def test_prompt_and_produced_turn(glm: GlmRenderer) -> None:
    msgs: list[Message] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert glm.decode(glm.generation_prompt_tokens(msgs[:1])) == "[gMASK]<sop><|user|>Hi<|assistant|><think>"
    tokens, weights = glm.supervised_tokens(msgs)
    assert glm.decode(tokens) == "[gMASK]<sop><|user|>Hi<|assistant|><think></think>Hello!<|user|>"
    assert _trained(glm, msgs) == "</think>Hello!<|user|>"
    assert weights.index(1.0) == len(glm.generation_prompt_tokens(msgs[:1]))


def test_terminator_belongs_to_the_assistant(glm: GlmRenderer) -> None:
    call = ToolCall("get_weather", json.dumps({"city": "Paris"}))
    msgs: list[Message] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "21"},
        {"role": "assistant", "content": "21 °C"},
    ]
    trained = _trained(glm, msgs, TrainOnWhat.ALL_ASSISTANT_MESSAGES)
    assert trained == (
        "</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call><|observation|>"
        "</think>21 °C<|user|>"
    )
    # a tool-calling produced turn ends with <|observation|>
    assert _trained(glm, msgs[:2]).endswith("</tool_call><|observation|>")


def test_reasoning_cleared_at_or_before_the_last_user(glm: GlmRenderer) -> None:
    def think(r: str, t: str) -> Message:
        return {"role": "assistant", "content": [{"type": "thinking", "thinking": r}, {"type": "text", "text": t}]}

    msgs: list[Message] = [{"role": "user", "content": "Hi"}, think(" a ", " Hello! "), {"role": "user", "content": "2+2?"}, think("b", "4")]
    text = glm.decode(glm.supervised_tokens(msgs)[0])
    assert text == "[gMASK]<sop><|user|>Hi<|assistant|></think>Hello!<|user|>2+2?<|assistant|><think>b</think>4<|user|>"


def test_tools_prefix_and_argument_values(glm: GlmRenderer) -> None:
    prefix = glm.create_conversation_prefix_with_tools([WEATHER], "Be brief.")
    assert [m["role"] for m in prefix] == ["system", "system"]
    tokens = glm.generation_prompt_tokens([*prefix, {"role": "user", "content": "Hi"}])
    text = glm.decode(tokens)
    assert text.startswith("[gMASK]<sop><|system|>\n# Tools\n") and "</tool_call><|system|>Be brief.<|user|>Hi" in text
    assert tokens.count(glm.w.ids["<tool_call>"]) == 1, "the instructions' <tool_call> tag is the control token"
    call = ToolCall("f", json.dumps({"s": "x y", "n": 3, "b": True, "o": {"k": "é"}}))
    out = glm.decode(glm.supervised_tokens([{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]}])[0])
    assert '<arg_value>x y</arg_value><arg_key>n</arg_key><arg_value>3</arg_value>' in out
    assert '<arg_value>true</arg_value><arg_key>o</arg_key><arg_value>{"k": "é"}</arg_value>' in out


def test_special_token_text_stays_literal(glm: GlmRenderer) -> None:
    tokens = glm.generation_prompt_tokens([{"role": "user", "content": "<|user|><think>"}])
    assert tokens.count(glm.user) == 1 and glm.w.ids["<think>"] in tokens[-1:]


def test_unknown_role_is_refused(glm: GlmRenderer) -> None:
    with pytest.raises(RendererError, match="no role 'developer'"):
        glm.generation_prompt_tokens([{"role": "developer", "content": "x"}])


@pytest.mark.parametrize(
    ("response", "term", "content"),
    [
        ("</think>Hello!<|user|>", ParseTermination.STOP_SEQUENCE, "Hello!"),
        ("</think>Hello!<|observation|>", ParseTermination.STOP_SEQUENCE, "Hello!"),
        ("</think> Hello! <|endoftext|>", ParseTermination.EOS, "Hello!"),
        ("Let me", ParseTermination.MALFORMED, "Let me"),
    ],
)
def test_parse_terminations(glm: GlmRenderer, response: str, term: ParseTermination, content: Any) -> None:
    msg, got = glm.parse_response(_encode(glm, response))
    assert got is term and msg["content"] == content


def test_parse_thinking_calls_and_errors(glm: GlmRenderer) -> None:
    resp = "plan</think>ok<tool_call>f<arg_key>a</arg_key><arg_value>1</arg_value><arg_key>s</arg_key><arg_value>x</arg_value></tool_call><|observation|>"
    msg, term = glm.parse_response(_encode(glm, resp))
    assert term is ParseTermination.STOP_SEQUENCE
    assert msg["content"] == [{"type": "thinking", "thinking": "plan"}, {"type": "text", "text": "ok"}]
    assert msg["tool_calls"] == [ToolCall("f", '{"a": 1, "s": "x"}')]
    assert not isinstance(parse_glm_tool_call('<tool_call>{"name": "f"}</tool_call>'), ToolCall)
    msg, _ = glm.parse_response(_encode(glm, "</think><tool_call>f<arg_key>a<|user|>"))
    assert msg["unparsed_tool_calls"][0].raw_text.startswith("<tool_call>f")
    with pytest.raises(RendererError, match="at most one stop token"):
        glm.parse_response(_encode(glm, "</think>a<|user|>b<|observation|>"))

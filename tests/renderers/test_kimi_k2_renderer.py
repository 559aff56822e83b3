"""Kimi K2 renderers (kimi_k2 = Kimi-K2-Instruct, kimi_k2_thinking = Kimi-K2-Thinking): behaviour and parsing.

The spec cases, goldens and property checks run through tests/renderers/test_conform_runner.py; these tests pin
the rules that the spec's deviations describe (reasoning kept for the produced turn, deep-sorted declarations,
given tool-call ids) and the parser, against the real Kimi K2 tokenizers (exported from tml-renderers, provisioned
on demand: the first run builds them in ~2 minutes).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, TrainOnWhat
from cookbook.renderers.base import Message
from cookbook.renderers.kimi_k2 import KimiK2Renderer, deep_sort, kimi_tools_json
from cookbook.tokenizers import get_tokenizer

WEATHER = {
    "name": "get_weather",
    "description": "Weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
DEFAULT_SYSTEM = "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"


@pytest.fixture(scope="module")
def tok() -> Any:
    """The Thinking tokenizer serves both renderers here (it is the Instruct one plus <think>/</think>): one load
    instead of two. The kimi_k2 spec itself runs with the Instruct tokenizer (test_conform_runner)."""
    return get_tokenizer("moonshotai/Kimi-K2-Thinking")


@pytest.fixture(scope="module")
def instruct(tok: Any) -> KimiK2Renderer:
    return KimiK2Renderer(tok)


@pytest.fixture(scope="module")
def thinking(tok: Any) -> KimiK2Renderer:
    return KimiK2Renderer(tok, thinking=True)


def _think(reasoning: str, text: str, **extra: Any) -> Message:
    return {"role": "assistant", "content": [{"type": "thinking", "thinking": reasoning}, {"type": "text", "text": text}], **extra}  # type: ignore[typeddict-item]


def _call(name: str, args: dict[str, Any], call_id: str | None = None) -> ToolCall:
    return ToolCall(name=name, arguments=json.dumps(args), id=call_id)


def test_default_system_block_and_prompt(instruct: KimiK2Renderer, thinking: KimiK2Renderer) -> None:
    msgs: list[Message] = [{"role": "user", "content": "Hi"}]
    tail = "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
    assert instruct.decode(instruct.generation_prompt_tokens(msgs)) == DEFAULT_SYSTEM + "\n" + tail
    assert thinking.decode(thinking.generation_prompt_tokens(msgs)) == DEFAULT_SYSTEM + tail
    with_system: list[Message] = [{"role": "system", "content": "Be."}, *msgs]
    assert "You are Kimi" not in thinking.decode(thinking.generation_prompt_tokens(with_system))


def test_instruct_refuses_thinking_parts(instruct: KimiK2Renderer) -> None:
    with pytest.raises(RendererError, match="thinking"):
        instruct.build_supervised_example([{"role": "user", "content": "Hi"}, _think("r", "Hello!")])


def test_produced_turn_keeps_its_reasoning_and_the_tool_steps_before_it(thinking: KimiK2Renderer) -> None:
    msgs: list[Message] = [
        {"role": "user", "content": "Hi"},
        _think("old", "Hello!"),
        {"role": "user", "content": "Weather?"},
        _think("need it", "", tool_calls=[_call("get_weather", {"city": "Paris"}, "functions.get_weather:0")]),
        {"role": "tool", "content": "21", "tool_call_id": "functions.get_weather:0", "name": "get_weather"},
        _think("done", "21 °C"),
    ]
    tokens, weights = thinking.supervised_tokens(msgs)
    text = thinking.decode(tokens)
    assert "<think></think>Hello!" in text, "an earlier turn loses its reasoning"
    assert "<think>need it</think>" in text and text.endswith("<think>done</think>21 °C<|im_end|>")
    # the observation part is exactly the generation prompt (which shows the tool step's reasoning too)
    prompt = thinking.generation_prompt_tokens(msgs[:-1])
    assert tokens[: len(prompt)] == prompt and weights.index(1.0) == len(prompt)
    # once the turn is finished, the next prompt shows it without reasoning (no extension property)
    later = thinking.decode(thinking.generation_prompt_tokens([*msgs, {"role": "user", "content": "Thanks"}]))
    assert "<think>need it</think>" not in later and "<think></think>21 °C" in later


def test_last_assistant_turn_trains_every_reply_after_the_last_user(thinking: KimiK2Renderer) -> None:
    msgs: list[Message] = [
        {"role": "user", "content": "Two facts"},
        {"role": "assistant", "content": "One."},
        {"role": "assistant", "content": "Two."},
    ]
    tokens, weights = thinking.supervised_tokens(msgs, TrainOnWhat.LAST_ASSISTANT_TURN)
    trained = thinking.decode([t for t, w in zip(tokens, weights) if w])
    assert trained == "<think></think>One.<|im_end|><think></think>Two.<|im_end|>"


def test_tool_declaration_is_deep_sorted_with_default_separators(instruct: KimiK2Renderer) -> None:
    payload = json.loads(kimi_tools_json([WEATHER]))
    assert payload == [{"type": "function", "function": WEATHER}]
    text = kimi_tools_json([WEATHER])
    assert text.startswith('[{"function": {"description": "Weather.", "name": "get_weather", "parameters": {"properties"')
    assert text.endswith('"type": "object"}}, "type": "function"}]')
    assert deep_sort({"b": [{"d": 1, "c": 2}], "a": 0}) == {"a": 0, "b": [{"c": 2, "d": 1}]}
    prefix = instruct.create_conversation_prefix_with_tools([WEATHER], "Be brief.")
    assert [m["role"] for m in prefix] == ["tool_declare", "system"]
    rendered = instruct.decode(instruct.generation_prompt_tokens([*prefix, {"role": "user", "content": "Hi"}]))
    assert rendered.startswith("<|im_system|>tool_declare<|im_middle|>[{") and "You are Kimi" not in rendered
    no_system = instruct.create_conversation_prefix_with_tools([WEATHER])
    rendered = instruct.decode(instruct.generation_prompt_tokens([*no_system, {"role": "user", "content": "Hi"}]))
    assert "<|im_end|>" + DEFAULT_SYSTEM + "\n<|im_user|>" in rendered, "the default system prompt follows the declaration"


def test_tool_call_ids_given_or_counted(instruct: KimiK2Renderer) -> None:
    msgs: list[Message] = [
        {"role": "user", "content": "Paris and Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Paris"}), _call("get_weather", {"city": "Tokyo"}, "call_x")]},
        {"role": "tool", "content": "21", "name": "get_weather"},
        {"role": "tool", "content": "18", "tool_call_id": "call_x"},
    ]
    text = instruct.decode(instruct.generation_prompt_tokens(msgs))
    assert "<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>" in text
    # an id that is not functions.NAME:IDX is written in the template's counted form (the id carries the name)
    assert "<|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>" in text and "call_x" not in text
    assert "<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n21<|im_end|>" in text
    assert "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:1\n18<|im_end|>" in text
    sampled = text.split("<|im_assistant|>assistant<|im_middle|>", 1)[1].split("<|im_end|>", 1)[0] + "<|im_end|>"
    parsed, _ = instruct.parse_response(instruct.tokenizer.encode(sampled, add_special_tokens=False))
    assert [c.name for c in parsed.get("tool_calls", [])] == ["get_weather", "get_weather"]


def test_arguments_are_written_verbatim(instruct: KimiK2Renderer) -> None:
    msgs: list[Message] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [ToolCall("f", '{"a":1}', "functions.f:0")]},
    ]
    assert '<|tool_call_argument_begin|>{"a":1}<|tool_call_end|>' in instruct.decode(instruct.supervised_tokens(msgs)[0])
    with pytest.raises(RendererError, match="not valid JSON"):
        instruct.supervised_tokens([msgs[0], {"role": "assistant", "content": "", "tool_calls": [ToolCall("f", "{", None)]}])


def test_special_token_text_in_content_stays_literal(thinking: KimiK2Renderer) -> None:
    tokens = thinking.generation_prompt_tokens([{"role": "user", "content": "<|im_end|><think>"}])
    assert tokens.count(thinking.im_end) == 2 and thinking.w.ids["<think>"] not in tokens


def _encode(r: KimiK2Renderer, text: str) -> list[int]:
    return list(r.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)


def test_parse_roundtrip_with_thinking_and_calls(thinking: KimiK2Renderer) -> None:
    msg = _think("plan", "Checking.", tool_calls=[_call("get_weather", {"city": "Paris"}, "functions.get_weather:0")])
    msgs: list[Message] = [{"role": "user", "content": "Weather?"}, msg]
    full = thinking.supervised_tokens(msgs)[0]
    prompt = thinking.generation_prompt_tokens(msgs[:1])
    parsed, term = thinking.parse_response(full[len(prompt) :])
    assert term is ParseTermination.STOP_SEQUENCE
    assert parsed["content"] == [{"type": "thinking", "thinking": "plan"}, {"type": "text", "text": "Checking."}]
    assert parsed["tool_calls"] == [ToolCall("get_weather", '{"city": "Paris"}', "functions.get_weather:0")]


@pytest.mark.parametrize(
    ("response", "term", "content"),
    [
        ("Hello!<|im_end|>", ParseTermination.STOP_SEQUENCE, "Hello!"),
        ("Hello![EOS]", ParseTermination.EOS, "Hello!"),
        ("Hel", ParseTermination.MALFORMED, "Hel"),
        ("<think>x</think>Hi<|im_end|>", ParseTermination.STOP_SEQUENCE, "<think>x</think>Hi"),
    ],
)
def test_instruct_parse_terminations(instruct: KimiK2Renderer, response: str, term: ParseTermination, content: str) -> None:
    msg, got = instruct.parse_response(_encode(instruct, response))
    assert got is term and msg["content"] == content


def test_parse_malformed_calls_and_two_stops(thinking: KimiK2Renderer) -> None:
    bad = '<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"a": }<|tool_call_end|>'
    msg, term = thinking.parse_response(_encode(thinking, f"<think></think><|tool_calls_section_begin|>{bad}<|tool_calls_section_end|><|im_end|>"))
    assert term is ParseTermination.STOP_SEQUENCE and "tool_calls" not in msg
    assert [u.raw_text for u in msg["unparsed_tool_calls"]] == [bad]
    msg, _ = thinking.parse_response(_encode(thinking, "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|im_end|>"))
    assert msg.get("unparsed_tool_calls") and not msg.get("tool_calls"), "an unterminated section parses to nothing"
    with pytest.raises(RendererError, match="at most one stop token"):
        thinking.parse_response(_encode(thinking, "a<|im_end|>b<|im_end|>"))

"""DeepSeek V4.1 renderers (deepseekv4_1*) and the GLM-5.3 option of the GLM renderer (glm5_3_*): the rules the
spec cases do not pin (options, refusals, the tool-declaration rules, the schema key order), with tml-renderers
0.2.1 as the oracle where it has the behaviour.

The spec cases, goldens and property checks run through tests/renderers/test_conform_runner.py and the differential
run through tests/renderers/test_vs_tml.py. The tokenizers are exported from tml-renderers (provisioned on demand).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cookbook.conformance import tml
from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, get_renderer
from cookbook.renderers.base import Message
from cookbook.renderers.deepseek_v4_1 import DeepSeekV41Renderer
from cookbook.renderers.glm import GlmRenderer, glm5_3_tool_json
from cookbook.tokenizers import get_tokenizer

needs_tml = pytest.mark.skipif(not tml.available(), reason="tml_renderers (needs torch) is not importable")

WEATHER = {
    "name": "get_weather",
    "description": "Weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
#: schemas whose keys tml-renderers' GLM serialiser reorders (the expected lines were read from Glm53's output)
SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "required": ["z"], "properties": {"z": {"type": "string", "description": "zz", "enum": ["b", "a"]},
     "a": {"type": "integer", "default": 3}}, "additionalProperties": False, "$defs": {"y": 1, "b": 2}},
    {"zeta": 1, "title": "T", "required": ["z"], "alpha": 2, "type": "object",
     "properties": {"z": {"minimum": 1, "title": "Z", "description": "zz", "type": "array",
                          "items": {"type": "object", "properties": {"q": {"type": "string"}, "b": {"type": "string"}}}}}},
    {"items": {"type": "string"}, "additionalProperties": {"type": "string", "z": 1, "a": 2}, "enum": [3, 1],
     "properties": {"p": {"enum": ["x"], "nullable": True, "anyOf": [{"type": "string", "b": 1, "a": 2}], "type": "object"}},
     "required": ["p"], "description": "top", "type": "object", "default": {"z": 1, "a": [{"y": 1, "b": 2}]}},
    {},
]


@pytest.fixture(scope="module")
def ds_tok() -> Any:
    return get_tokenizer("deepseek-ai/DeepSeek-V4.1-Flash")


@pytest.fixture(scope="module")
def glm_tok() -> Any:
    return get_tokenizer("zai-org/GLM-5.3")


def test_effort_options_and_their_refusals(ds_tok: Any) -> None:
    assert DeepSeekV41Renderer(ds_tok, "low").reasoning_effort == 50
    assert DeepSeekV41Renderer(ds_tok, 30).reasoning_effort == 30
    for bad in ("medium", 0, 101, True):
        with pytest.raises(RendererError):
            DeepSeekV41Renderer(ds_tok, bad)
    with pytest.raises(RendererError):
        DeepSeekV41Renderer(ds_tok, None, preserve_thinking=True)
    with pytest.raises(RendererError):
        GlmRenderer(ds_tok, "medium")


@needs_tml
def test_an_int_effort_matches_tml(ds_tok: Any) -> None:
    msgs: list[Message] = [{"role": "user", "content": "Hi"}]
    ours = DeepSeekV41Renderer(ds_tok, 30).generation_prompt_tokens(msgs)
    assert ours == tml.TmlOracle("DeepSeekV41", None, {"reasoning_effort": 30}).generation(msgs).tokens


def test_tool_declaration_must_open_the_conversation(ds_tok: Any) -> None:
    r = get_renderer("deepseekv4_1", ds_tok)
    prefix = r.create_conversation_prefix_with_tools([WEATHER], "Be brief.")  # type: ignore[attr-defined]
    assert [m["role"] for m in prefix] == ["system", "tool_declare"]
    late: list[Message] = [{"role": "user", "content": "Hi"}, prefix[1]]
    with pytest.raises(RendererError):
        r.build_generation_prompt(late)
    with pytest.raises(RendererError):
        r.build_generation_prompt([{"role": "tool_declare", "content": "not json"}, {"role": "user", "content": "Hi"}])
    with pytest.raises(RendererError):
        r.create_conversation_prefix_with_tools([{"description": "no name"}])  # type: ignore[attr-defined,list-item]


def test_declared_tools_keep_earlier_reasoning(ds_tok: Any) -> None:
    r = get_renderer("deepseekv4_1", ds_tok)
    history: list[Message] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "greeting"}, {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "More"},
    ]
    plain = r.decode(r.generation_prompt_tokens(history))  # type: ignore[attr-defined]
    with_tools = r.decode(r.generation_prompt_tokens(r.create_conversation_prefix_with_tools([WEATHER]) + history))  # type: ignore[attr-defined]
    assert "<｜Assistant｜></think>Hello" in plain and "greeting" not in plain
    assert "<｜Assistant｜><think>greeting</think>Hello" in with_tools


def test_tool_results_follow_the_call_order(ds_tok: Any) -> None:
    r = get_renderer("deepseekv4_1_disable_thinking", ds_tok)
    msgs: list[Message] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [ToolCall("f", "{}", "a"), ToolCall("f", "{}", "b")]},
        {"role": "tool", "content": "B", "tool_call_id": "b"},
        {"role": "tool", "content": "A", "tool_call_id": "a"},
    ]
    text = r.decode(r.generation_prompt_tokens(msgs))  # type: ignore[attr-defined]
    assert text.endswith("<｜User｜><tool_result>A</tool_result>\n\n<tool_result>B</tool_result><｜Assistant｜></think>")


def test_parse_roundtrip_of_a_dsml_turn(ds_tok: Any) -> None:
    r = get_renderer("deepseekv4_1", ds_tok)
    call = ToolCall("get_weather", json.dumps({"city": "Paris", "days": [1, 2], "note": "é"}, ensure_ascii=False))
    msgs: list[Message] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "look"}, {"type": "text", "text": "ok\n"}],
         "tool_calls": [call]},
    ]
    tokens, weights = r.supervised_tokens(msgs)  # type: ignore[attr-defined]
    sampled = [t for t, w in zip(tokens, weights, strict=True) if w]
    msg, term = r.parse_response(sampled)
    assert term is ParseTermination.STOP_SEQUENCE
    assert msg["content"] == [{"type": "thinking", "thinking": "look"}, {"type": "text", "text": "ok\n"}]
    assert [json.loads(c.arguments) for c in msg["tool_calls"]] == [json.loads(call.arguments)]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_glm5_3_tool_lines_follow_tml(schema: dict[str, Any], glm_tok: Any) -> None:
    tool = {"name": "f", "description": "d", "parameters": schema}
    line = glm5_3_tool_json(tool)  # type: ignore[arg-type]
    assert json.loads(line) == {"name": "f", "description": "d", "parameters": schema}  # only the order changes
    if not tml.available():
        pytest.skip("tml_renderers is not importable")
    text = tml.TmlOracle("Glm53", None, {"clear_thinking": False}).generation([{"role": "user", "content": "q"}], [tool]).text
    assert "<tools>\n" + line + "\n</tools>" in text


def test_glm5_3_keeps_reasoning_and_ends_with_endoftext(glm_tok: Any) -> None:
    r = get_renderer("glm5_3_high_reasoning", glm_tok)
    msgs: list[Message] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": " t1 "}, {"type": "text", "text": " A "}]},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "B"},
    ]
    tokens, weights = r.supervised_tokens(msgs, "all_assistant_messages")  # type: ignore[attr-defined]
    assert r.decode(tokens) == (  # type: ignore[attr-defined]
        "[gMASK]<sop><|system|>Reasoning Effort: High<|user|>Hi<|assistant|><think> t1 </think>A<|user|>u"
        "<|assistant|><think></think>B<|endoftext|>"
    )
    assert r.decode([t for t, w in zip(tokens, weights, strict=True) if w]) == " t1 </think>A<|user|></think>B<|endoftext|>"  # type: ignore[attr-defined]
    assert get_renderer("glm", glm_tok).get_stop_sequences() == [glm_tok.convert_tokens_to_ids(t) for t in ("<|user|>", "<|observation|>")]

"""Nemotron 3 renderers (nemotron3, nemotron3_disable_thinking) against their specs and the Nemotron 3 Nano
chat template (llama.cpp copy) with the tokenizer exported from tml-renderers (provisioned on demand).

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
from cookbook.renderers import TrainOnWhat
from cookbook.renderers.base import ToolCall
from cookbook.renderers.nemotron3 import (
    Nemotron3Renderer,
    tool_declaration_xml,
)
from cookbook.tokenizers import get_tokenizer

SPECS = specs_dir("renderers")
CLASSES: dict[str, dict[str, bool]] = {  # registered name -> Nemotron3Renderer options
    "nemotron3": {},
    "nemotron3_disable_thinking": {"enable_thinking": False},
}


@pytest.fixture(scope="module")
def specs() -> dict[str, Spec]:
    return {n: load_spec(SPECS / f"{n}.yaml") for n in CLASSES}


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("nvidia/Nemotron-3-Nano-30B-A3B")


@pytest.fixture(scope="module")
def renderers(tok: Any) -> dict[str, Nemotron3Renderer]:
    return {n: Nemotron3Renderer(tok, **o) for n, o in CLASSES.items()}


def test_empty_system_block_and_prompt(renderers: dict[str, Nemotron3Renderer], tok: Any) -> None:
    r = renderers["nemotron3"]
    text = r.decode(r.generation_prompt_tokens([{"role": "user", "content": "Hi"}]))
    assert text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    d = renderers["nemotron3_disable_thinking"]
    tokens = d.generation_prompt_tokens([{"role": "user", "content": "Hi"}])
    assert tokens[-2:] == [12, 13], "the prompt ends with the <think></think> control tokens"


def test_reasoning_turn_weights(renderers: dict[str, Nemotron3Renderer]) -> None:
    r = renderers["nemotron3"]
    conv: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]},
    ]
    tokens, weights = r.supervised_tokens(conv)
    prompt = r.generation_prompt_tokens(conv[:1])
    assert tokens[: len(prompt)] == prompt and not any(weights[: len(prompt)])
    assert r.decode(tokens[len(prompt) :]) == "greet\n</think>\nHello!<|im_end|>" and all(weights[len(prompt) :])
    msg, term = r.parse_response(tokens[len(prompt) :])
    assert term == "stop_sequence"
    assert msg["content"] == [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]


def test_disable_thinking_refuses_a_trained_turn_that_reasons(renderers: dict[str, Nemotron3Renderer]) -> None:
    r = renderers["nemotron3_disable_thinking"]
    conv: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]},
    ]
    with pytest.raises(RendererError, match="disables thinking"):
        r.supervised_tokens(conv, TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    tokens, weights = r.supervised_tokens([conv[0], {"role": "assistant", "content": "Hello!"}])
    assert r.decode([t for t, w in zip(tokens, weights) if w]) == "Hello!<|im_end|>"


def test_tool_declaration_extra_keys_and_enum() -> None:
    tool = {
        "name": "f",
        "description": " d ",
        "parameters": {
            "type": "object",
            "properties": {"u": {"type": "string", "enum": ["c", "f"], "default": "c", "items": {"x": 1}}},
            "required": ["u"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    assert tool_declaration_xml({"type": "function", "function": tool}) == (
        "\n<function>\n<name>f</name>\n<description>d</description>\n<parameters>\n<parameter>\n<name>u</name>"
        '\n<type>string</type>\n<enum>["c", "f"]</enum>\n<default>c</default>\n<items>{"x": 1}</items>\n</parameter>'
        '\n<additionalProperties>False</additionalProperties>\n<required>["u"]</required>\n</parameters>'
        "\n<strict>True</strict>\n</function>"
    )


def test_tool_declaration_matches_the_template_on_extra_keys(tok: Any, renderers: dict[str, Nemotron3Renderer]) -> None:
    tool: Any = {
        "name": "f",
        "description": "Find.",
        "parameters": {
            "type": "object",
            "properties": {"u": {"type": ["string", "null"], "enum": ["c", "f"], "default": None}},
            "required": ["u"],
            "additionalProperties": False,
        },
    }
    conv = [{"role": "user", "content": "Hi"}]
    expected = tok.apply_chat_template(conv, tools=[{"type": "function", "function": tool}], tokenize=False, add_generation_prompt=True)
    r = renderers["nemotron3"]
    msgs: Any = [*r.create_conversation_prefix_with_tools([tool]), *conv]
    assert r.decode(r.generation_prompt_tokens(msgs)) == expected


_CALL: Any = {"type": "function", "function": {"name": "f", "arguments": {"q": "x"}}}
_INLINE: dict[str, list[Any]] = {  # inline think blocks in history reply strings (the wide property inputs' kind)
    "before the last user message": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>x</think>text"},
        {"role": "user", "content": "b"},
    ],
    "before the last user message, blank lines": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\n\n</think>\n\n text "},
        {"role": "user", "content": "b"},
    ],
    "a tool-calling step of the current turn": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": " <think> x </think> text ", "tool_calls": [_CALL]},
        {"role": "tool", "content": "r"},
    ],
    "a history tool-calling step": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>x</think>", "tool_calls": [_CALL]},
        {"role": "tool", "content": "r"},
        {"role": "assistant", "content": "pre<think>y</think>z"},
        {"role": "user", "content": "b"},
    ],
}


@pytest.mark.parametrize("name", ["nemotron3", "nemotron3_disable_thinking", "nemotron3_preserve_thinking"])
@pytest.mark.parametrize("where", list(_INLINE))
def test_inline_think_in_history_is_kept_as_the_template_keeps_it(tok: Any, name: str, where: str) -> None:
    """The template keeps a reply string with a think block as written (a history one before the last user message:
    "<think></think>" + what follows the last </think>), its tags tokenized as the control tokens: token-exact."""
    kwargs = {"nemotron3": {}, "nemotron3_disable_thinking": {"enable_thinking": False},
              "nemotron3_preserve_thinking": {"truncate_history_thinking": False}}[name]
    opts = {"nemotron3": {}, "nemotron3_disable_thinking": {"enable_thinking": False},
            "nemotron3_preserve_thinking": {"strip_thinking_from_history": False}}[name]
    conv = _INLINE[where]
    tmsgs = [
        {**m, "tool_calls": [c["function"] for c in m["tool_calls"]]} if m.get("tool_calls") else m for m in conv
    ]
    expected = tok.apply_chat_template(tmsgs, tokenize=True, add_generation_prompt=True, **kwargs)
    expected = list(getattr(expected, "input_ids", expected))
    r = Nemotron3Renderer(tok, **opts)
    msgs: Any = [{**m, "tool_calls": [ToolCall("f", '{"q": "x"}')]} if m.get("tool_calls") else m for m in conv]
    assert r.generation_prompt_tokens(msgs) == expected


_ULTRA_INLINE: dict[str, list[Any]] = {
    "a history reply": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "pre<think>y</think>z"},
        {"role": "user", "content": "b"},
    ],
    "a history reply with newlines": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\ny\n</think>\nz"},
        {"role": "user", "content": "b"},
    ],
    "a step of the current turn": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>y</think>w"},
        {"role": "assistant", "content": "q"},
    ],
}


@pytest.mark.parametrize(
    ("name", "constructor"),
    [("nemotron3_ultra", "ultra"), ("nemotron3_ultra_disable_thinking", "ultra_disable_thinking"),
     ("nemotron3_ultra_preserve_thinking", "ultra_preserve_thinking_history")],
)
@pytest.mark.parametrize("where", list(_ULTRA_INLINE))
def test_ultra_inline_think_in_history_is_literal_text_as_tml_writes_it(name: str, constructor: str, where: str) -> None:
    """The Ultra format's oracle (tml-renderers' Nemotron3.ultra*()) writes a history reply string with a think block
    as literal text after its own think block; the renderer does too: generation prompt and supervised example
    (the last message produced) token-exact, with tml's weights."""
    pytest.importorskip("tml_renderers.renderers", reason="tml-renderers 0.2.1 (test extra) is the oracle")
    from cookbook.conformance.tml import TmlOracle
    from cookbook.renderers import get_renderer

    oracle = TmlOracle("Nemotron3", constructor)
    ours = get_renderer(name, get_tokenizer("nvidia/Nemotron-3-Nano-30B-A3B"))
    conv = _ULTRA_INLINE[where]
    assert list(ours.generation_prompt_tokens(conv)) == oracle.generation(conv).tokens
    full = [*conv, {"role": "assistant", "content": "Done."}] if conv[-1]["role"] == "user" else conv
    mi, weights = ours.build_supervised_example(full)
    ref = oracle.supervised(full)
    assert mi.to_ints() == ref.tokens
    assert [float(w) for w in weights] == ref.weights

"""DeepSeek V3.1 renderers (deepseekv3, deepseekv3_disable_thinking, deepseekv3_thinking) against their specs and
the DeepSeek-V3.1 chat template (llama.cpp's copy, with the specs' named edits that restore the original).

* every spec check of the conformance runner (decoded supervised text with trained spans, decoded generation
  prompt, token counts, raises, parse cases, stop sequences, claims; property checks on a few random
  conversations);
* the generation prompt's TOKENS against ``apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`` with the case's declared template edits (cases whose template is skipped excepted);
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
from cookbook.renderers import ParseTermination, ToolCall, TrainOnWhat
from cookbook.renderers.base import model_input_tokens
from cookbook.renderers.deepseek_v3 import (
    DeepSeekV3Renderer,
    tool_declaration,
)
from cookbook.tokenizers import get_tokenizer

SPECS = specs_dir("renderers")
CLASSES: dict[str, dict[str, bool]] = {  # registered name -> DeepSeekV3Renderer options
    "deepseekv3": {},
    "deepseekv3_disable_thinking": {},
    "deepseekv3_thinking": {"thinking": True},
}


@pytest.fixture(scope="module")
def specs() -> dict[str, Spec]:
    return {n: load_spec(SPECS / f"{n}.yaml") for n in CLASSES}


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("deepseek-ai/DeepSeek-V3.1")


@pytest.fixture(scope="module")
def renderers(tok: Any) -> dict[str, DeepSeekV3Renderer]:
    return {n: DeepSeekV3Renderer(tok, **o) for n, o in CLASSES.items()}


def test_llamacpp_template_is_the_edited_copy(tok: Any) -> None:
    """The named deviation llamacpp-empty-think exists because the oracle writes <think></think>: if the cached
    template ever becomes the original, the edit (optional) would silently stop mattering; say so here."""
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<｜Assistant｜><think></think>")


def test_chat_mode_refuses_reasoning_in_the_trained_turn(renderers: dict[str, DeepSeekV3Renderer]) -> None:
    msgs: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>hmm</think>Hello"},
    ]
    for name in ("deepseekv3", "deepseekv3_disable_thinking"):
        with pytest.raises(RendererError, match="deepseekv3_thinking"):
            renderers[name].build_supervised_example(msgs)
    # in history the reasoning is dropped, as the template drops it
    hist = [*msgs, {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Hi"}]
    tokens, _ = renderers["deepseekv3"].supervised_tokens(hist)
    assert "hmm" not in renderers["deepseekv3"].decode(tokens)


def test_thinking_mode_trains_after_the_prefilled_think(renderers: dict[str, DeepSeekV3Renderer]) -> None:
    r = renderers["deepseekv3_thinking"]
    msgs: list[Any] = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "R"}, {"type": "text", "text": "A"}],
        },
    ]
    tokens, weights = r.supervised_tokens(msgs, TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    trained = r.decode([t for t, w in zip(tokens, weights) if w])
    assert trained == "R</think>A<｜end▁of▁sentence｜>"
    tokens, weights = r.supervised_tokens(msgs, TrainOnWhat.ALL_ASSISTANT_MESSAGES)
    assert r.decode([t for t, w in zip(tokens, weights) if w]) == "<think>R</think>A<｜end▁of▁sentence｜>"
    assert not r.has_extension_property and renderers["deepseekv3"].has_extension_property


@pytest.mark.parametrize("name", list(CLASSES))
def test_roundtrip_of_a_sampled_turn(name: str, renderers: dict[str, DeepSeekV3Renderer]) -> None:
    r = renderers[name]
    content: Any = (
        [{"type": "thinking", "thinking": "R"}, {"type": "text", "text": "Checking."}]
        if r.thinking
        else "Checking."
    )
    calls = [ToolCall("get_weather", '{"city":"Paris"}'), ToolCall("get_time", "{}")]
    msgs: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": content, "tool_calls": calls},
    ]
    prompt = model_input_tokens(r.build_generation_prompt(msgs[:1]))
    tokens, _ = r.supervised_tokens(msgs)
    assert tokens[: len(prompt)] == prompt
    msg, term = r.parse_response(tokens[len(prompt) :])
    assert term is ParseTermination.STOP_SEQUENCE
    assert msg["content"] == content and msg["tool_calls"] == calls


def test_tool_declaration_follows_the_model_card(renderers: dict[str, DeepSeekV3Renderer]) -> None:
    tools: Any = [
        {"name": "f", "description": "d", "parameters": {"type": "object"}},
        {"name": "g", "description": "e", "parameters": {}},
    ]
    text = tool_declaration(tools)
    assert text.startswith(
        '## Tools\nYou have access to the following tools:\n\n### f\nDescription: d\n\nParameters: {"type": "object"}\n\n### g\n'
    )
    assert text.endswith("chain them directly without separators or spaces")
    prefix = renderers["deepseekv3"].create_conversation_prefix_with_tools(tools, "Sys")
    assert prefix == [{"role": "system", "content": "Sys\n\n" + text}]
    assert renderers["deepseekv3"].create_conversation_prefix_with_tools([], None) == []


def test_no_prompt_after_a_tool_output_or_an_assistant_turn(
    renderers: dict[str, DeepSeekV3Renderer], tok: Any
) -> None:
    r = renderers["deepseekv3_thinking"]
    msgs: list[Any] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert r.decode(model_input_tokens(r.build_generation_prompt(msgs))).endswith(
        "Hello<｜end▁of▁sentence｜>"
    )
    with pytest.raises(RendererError, match="system message"):
        r.build_generation_prompt([{"role": "user", "content": "Hi"}, {"role": "system", "content": "S"}])

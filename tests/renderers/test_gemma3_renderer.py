"""Gemma 3 renderer against ``specs/renderers/gemma3.yaml`` and the real Gemma 3 chat template.

* every spec check of the conformance runner (decoded supervised text with trained spans, decoded generation
  prompt, token counts, raises, parse cases, stop sequences, claims; property checks on a few random
  conversations);
* the generation prompt's TOKENS against ``apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`` with the case's declared template edits (as text for ``compare: text`` deviations);
* behaviour tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from cookbook.conformance.oracle import Codec
from cookbook.conformance.spec import (
    Spec,
    load_spec,
)
from cookbook.data import specs_dir
from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, TrainOnWhat
from cookbook.renderers.base import model_input_tokens
from cookbook.renderers.gemma3 import Gemma3Renderer
from cookbook.tokenizers import get_tokenizer

SPEC_PATH = specs_dir("renderers") / "gemma3.yaml"


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="module")
def tok(spec: Spec) -> Any:
    return get_tokenizer(spec.tokenizer)


@pytest.fixture(scope="module")
def renderer(tok: Any) -> Gemma3Renderer:
    return Gemma3Renderer(tok)


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

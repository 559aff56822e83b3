"""Renderer core behaviour that every family inherits: input checks, TrainOnWhat rules, registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cookbook.errors import ConfigurationError, RendererError
from cookbook.renderers import (
    Message,
    ParseTermination,
    TrainOnWhat,
    builtin_renderer_names,
    get_renderer,
    register_renderer,
    unregister_renderer,
)
from cookbook.renderers.llama3 import Llama3Renderer
from cookbook.tokenizers import get_tokenizer


@pytest.fixture(scope="module")
def llama() -> Llama3Renderer:
    r = get_renderer("llama3", get_tokenizer("meta-llama/Llama-3.1-8B-Instruct"))
    assert isinstance(r, Llama3Renderer)
    return r


CONV: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]


def test_train_on_what_has_the_seven_upstream_values() -> None:
    assert {t.value for t in TrainOnWhat} == {
        "last_assistant_message",
        "last_assistant_turn",
        "all_assistant_messages",
        "all_messages",
        "all_tokens",
        "all_user_and_system_messages",
        "customized",
    }


def test_supervised_example_types(llama: Llama3Renderer) -> None:
    mi, w = llama.build_supervised_example(CONV)
    assert isinstance(w, np.ndarray) and w.dtype == np.float32
    assert len(w) == mi.length
    assert w[0] == 0.0, "BOS is never trained"


def test_image_parts_are_refused_by_text_only_renderers(llama: Llama3Renderer) -> None:
    msgs: list[Any] = [{"role": "user", "content": [{"type": "image", "image": "data:,"}, {"type": "text", "text": "?"}]}]
    with pytest.raises(RendererError, match=r"message 0 \(user\) has an image part.*text-only"):
        llama.build_generation_prompt(msgs)


def test_thinking_is_refused_without_a_thinking_format(llama: Llama3Renderer) -> None:
    msgs: list[Any] = [*CONV[:2], {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}]
    with pytest.raises(RendererError, match="no thinking format"):
        llama.build_supervised_example(msgs)


def test_tools_are_refused_without_a_tool_format(llama: Llama3Renderer) -> None:
    with pytest.raises(RendererError, match="no tool-calling format"):
        llama.build_generation_prompt([*CONV, {"role": "tool", "content": "42"}])


def test_customized_needs_trainable_everywhere(llama: Llama3Renderer) -> None:
    with pytest.raises(RendererError, match=r"missing on \[0, 2\]"):
        llama.build_supervised_example(
            [CONV[0], {**CONV[1], "trainable": True}, CONV[2]], TrainOnWhat.CUSTOMIZED  # type: ignore[list-item]
        )


def test_trainable_without_customized_is_refused(llama: Llama3Renderer) -> None:
    with pytest.raises(RendererError, match="only train_on_what=customized honours"):
        llama.build_supervised_example([CONV[0], {**CONV[1], "trainable": True}, CONV[2]])  # type: ignore[list-item]


def test_last_assistant_message_needs_an_assistant_last(llama: Llama3Renderer) -> None:
    with pytest.raises(RendererError, match="last message to be an assistant"):
        llama.build_supervised_example(CONV[:2])


def test_malformed_messages_are_named(llama: Llama3Renderer) -> None:
    with pytest.raises(RendererError, match="message 1 must be a dict"):
        llama.build_generation_prompt([CONV[0], {"content": "no role"}])  # type: ignore[list-item]
    with pytest.raises(RendererError, match="unknown content part"):
        llama.build_generation_prompt([{"role": "user", "content": [{"type": "audio"}]}])  # type: ignore[list-item]


def test_unknown_train_on_what(llama: Llama3Renderer) -> None:
    with pytest.raises(ValueError, match="not_a_mode"):
        llama.build_supervised_example(CONV, "not_a_mode")


def test_parse_two_stop_tokens_raises_value_error(llama: Llama3Renderer) -> None:
    eot = llama.eot
    with pytest.raises(ValueError, match="at most one stop token"):
        llama.parse_response([1, eot, 2, eot])
    msg, term = llama.parse_response([*llama.enc.encode("Hi"), eot])
    assert term is ParseTermination.STOP_SEQUENCE and msg["content"] == "Hi"


def test_registry_custom_shadows_and_unknown_lists() -> None:
    tok = get_tokenizer("meta-llama/Llama-3.1-8B-Instruct")
    calls: list[str] = []

    def factory(t: Any) -> Llama3Renderer:
        calls.append("x")
        return Llama3Renderer(t)

    register_renderer("llama3", factory)
    try:
        get_renderer("llama3", tok)
        assert calls == ["x"]
    finally:
        unregister_renderer("llama3")
    with pytest.raises(ConfigurationError, match=r"Registered: .*llama3"):
        get_renderer("nope", tok)
    r = get_renderer("cookbook.renderers.llama3:Llama3Renderer", tok)
    assert isinstance(r, Llama3Renderer)
    assert {"role_colon", "llama3", "qwen3", "qwen3_disable_thinking", "qwen3_instruct"} <= set(builtin_renderer_names())


def test_get_renderer_accepts_a_model_name() -> None:
    r = get_renderer("llama3", "meta-llama/Llama-3.1-8B-Instruct")
    assert isinstance(r, Llama3Renderer)

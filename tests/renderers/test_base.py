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


def _sub(cls: type, llama: Llama3Renderer, **attrs: Any) -> Any:
    """An instance of a test subclass that shares the fixture's tokenizer, encoder and token ids (building a
    TextEncoder re-reads the whole tokenizer, which is slow)."""
    r = cls.__new__(cls)
    r.__dict__.update(llama.__dict__)
    r.__dict__.update(attrs)
    return r


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


# ------------------------------------------------------------------------------------------ the core's algorithms
# The tests below pin the behaviour every family inherits from cookbook/renderers/base.py (they are the
# selection `tools/mutation.py` runs for that file). Expected values come from the llama3 goldens (the
# template as oracle) or, for hooks llama3 does not use, from a small format written out in the test itself.


def _llama_cases() -> list[Any]:
    from cookbook.conformance.spec import load_spec, spec_path_for

    return list(load_spec(spec_path_for("llama3")).cases)


@pytest.mark.parametrize("case", _llama_cases(), ids=lambda c: c.id)
def test_core_reproduces_the_llama3_goldens(llama: Llama3Renderer, case: Any) -> None:
    """Flattening, TrainOnWhat weights and the generation prompt against the template's goldens."""
    from cookbook.conformance.golden import load_golden
    from cookbook.conformance.oracle import Codec
    from cookbook.conformance.properties import expected_weights
    from cookbook.conformance.spec import to_messages

    g = load_golden("llama3", case.id)
    assert g is not None
    msgs = to_messages(case.messages)
    codec = Codec(llama.tokenizer)
    if g.get("supervised"):
        mi, w = llama.build_supervised_example(msgs, case.train_on_what)
        tokens = mi.to_ints()
        assert llama.decode(tokens) == g["supervised"]["text"]
        spans = [tuple(s) for s in g["supervised"]["trained_spans"]]
        assert w.tolist() == expected_weights(tokens, spans, codec)
    if g.get("generation_prompt"):
        prompt = llama.build_generation_prompt(to_messages(case.prompt_messages), case.role, case.prefill).to_ints()
        if g["compare"] == "tokens":
            assert prompt == g["generation_prompt"]["tokens"]
        else:
            assert llama.decode(prompt) == g["generation_prompt"]["text"]


def test_message_helpers() -> None:
    from cookbook.renderers.base import has_images, message, text_of, thinking_of

    parts: list[Any] = [
        {"type": "thinking", "thinking": "t1"},
        {"type": "text", "text": "a"},
        {"type": "image", "image": b""},
        {"type": "thinking", "thinking": "t2"},
        {"type": "text", "text": "b"},
    ]
    assert text_of("plain") == "plain" and text_of(parts) == "ab" and text_of([]) == ""
    assert thinking_of("plain") == [] and thinking_of(parts) == ["t1", "t2"]
    assert has_images(parts) and not has_images(parts[:2]) and not has_images("an image")
    assert message("user") == {"role": "user", "content": ""}
    assert message("tool", "42", name="f", tool_call_id="c") == {"role": "tool", "content": "42", "name": "f", "tool_call_id": "c"}


def test_tool_call_arguments() -> None:
    from cookbook.renderers.base import ToolCall

    tc = ToolCall("f", '{"x": [1, "é"]}')
    assert tc.id is None and tc.arguments_dict() == {"x": [1, "é"]}
    with pytest.raises(RendererError):
        ToolCall("f", "{not json").arguments_dict()


def test_parse_termination_is_clean() -> None:
    assert ParseTermination.STOP_SEQUENCE.is_clean and ParseTermination.EOS.is_clean
    assert not ParseTermination.MALFORMED.is_clean


def test_model_input_tokens() -> None:
    import tinker

    from cookbook.renderers.base import model_input_tokens

    out = model_input_tokens([np.int64(3), 4])
    assert out == [3, 4] and all(type(t) is int for t in out)
    assert model_input_tokens((5, 6)) == [5, 6]
    assert model_input_tokens(tinker.ModelInput.from_ints([7, 8])) == [7, 8]
    with pytest.raises(TypeError):
        model_input_tokens("78")


def test_text_encoder(llama: Llama3Renderer) -> None:
    from cookbook.renderers.base import TextEncoder

    enc = llama.enc
    tok = llama.tokenizer
    with pytest.raises(RendererError):
        TextEncoder(object())
    assert enc.encode("") == [] and enc.encode_batch([]) == []
    # special-token text in content stays ordinary text
    literal = enc.encode("<|eot_id|>")
    assert literal != [llama.eot] and llama.eot not in literal and enc.decode(literal) == "<|eot_id|>"
    hi = tok.encode("Hello world", add_special_tokens=False)
    assert enc.encode("Hello world") == hi
    assert enc.encode_batch(["Hello world"]) == [hi]
    assert enc.encode_batch(["Hello world", "<|eot_id|>", "x"]) == [hi, literal, tok.encode("x", add_special_tokens=False)]
    assert enc.encode_cached("Hello world") == hi and enc.encode_cached("Hello world") == hi
    assert enc.special("<|eot_id|>") == tok.convert_tokens_to_ids("<|eot_id|>")
    with pytest.raises(RendererError):
        enc.special("<|no such token|>")
    assert enc.decode([llama.bos, *hi]) == "<|begin_of_text|>Hello world"
    long = "word " * 3000  # longer than any truncation a tokenizer.json may carry
    assert enc.decode(enc.encode(long)) == long and enc.encode_batch([long, "x"])[0] == enc.encode(long)


def test_text_encoder_literal_added_tokens() -> None:
    """Non-special added tokens (Qwen's ``<think>``) are the token unless ``literal_added_tokens`` is set."""
    from cookbook.renderers.base import TextEncoder

    qwen = get_tokenizer("Qwen/Qwen3-8B")
    think = qwen.convert_tokens_to_ids("<think>")
    end = qwen.convert_tokens_to_ids("<|im_end|>")
    plain = TextEncoder(qwen)
    assert plain.encode("<think>") == [think]
    assert end not in plain.encode("<|im_end|>")
    lit = TextEncoder(qwen, literal_added_tokens=True)
    assert think not in lit.encode("<think>") and lit.decode(lit.encode("<think>")) == "<think>"
    assert end not in lit.encode("<|im_end|>")


def test_text_encoders_share_the_literal_copy_until_the_tokenizer_changes() -> None:
    """The literal copy (a JSON round trip of the vocabulary) is built once per tokenizer and flag; a tokenizer that
    gained a token gets a fresh copy, in which the new token's text is literal too."""
    from transformers import AutoTokenizer

    from cookbook.renderers.base import TextEncoder
    from cookbook.tokenizers import tokenizer_dir

    qwen = get_tokenizer("Qwen/Qwen3-8B")
    assert TextEncoder(qwen)._literal is TextEncoder(qwen)._literal
    assert TextEncoder(qwen, literal_added_tokens=True)._literal is not TextEncoder(qwen)._literal
    own = AutoTokenizer.from_pretrained(str(tokenizer_dir("Qwen/Qwen3-8B")))  # a private copy we may change
    before = TextEncoder(own)
    own.add_special_tokens({"additional_special_tokens": ["<|cookbook_test|>"]})
    new_id = own.convert_tokens_to_ids("<|cookbook_test|>")
    after = TextEncoder(own)
    assert after._literal is not before._literal
    assert new_id not in after.encode("<|cookbook_test|>")
    assert after.decode(after.encode("<|cookbook_test|>")) == "<|cookbook_test|>"


def test_flatten_segments_memo_and_images(llama: Llama3Renderer) -> None:
    from cookbook.renderers.base import _flatten
    from cookbook.renderers.kit.vision import ImageSegment

    enc = llama.enc
    a, b = enc.encode("Hi"), enc.encode(" there")
    tokens, weights = _flatten(enc, [([1, 2], 0.0), ("", 1.0), ("Hi", 1.0), (" there", 0.0), ("Hi", 0.0)])
    assert tokens == [1, 2, *a, *b, *a]
    assert weights == [0.0, 0.0, *[1.0] * len(a), *[0.0] * len(b), *[0.0] * len(a)]
    memo = {"Hi": [999]}
    assert _flatten(enc, [("Hi", 1.0), (" there", 1.0)], memo)[0] == [999, *b]
    assert memo[" there"] == b
    img = ImageSegment(data=b"x", format="png", width=1, height=1, expected_tokens=3, pad_token=7)
    images: list[Any] = []
    tokens, weights = _flatten(enc, [([5], 1.0), (img, 1.0), ("Hi", 1.0), (img, 1.0)], images=images)
    assert tokens == [5, 7, 7, 7, *a, 7, 7, 7]
    assert weights == [1.0, 0.0, 0.0, 0.0, *[1.0] * len(a), 0.0, 0.0, 0.0]
    assert images == [(1, img), (4 + len(a), img)]
    assert _flatten(enc, [(img, 1.0)])[0] == [7, 7, 7]


def test_output_is_trained_and_last_user_index() -> None:
    from cookbook.renderers.base import RenderContext, last_user_index, output_is_trained

    assert last_user_index([]) == -1
    assert last_user_index([{"role": "system", "content": ""}, {"role": "assistant", "content": ""}]) == -1
    conv: list[Message] = [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
    ]
    assert last_user_index(conv) == 2

    def ctx(is_last: bool, in_turn: bool) -> RenderContext:
        return RenderContext(idx=0, is_last=is_last, prev=None, next=None, last_user_index=0, in_last_assistant_turn=in_turn)

    roles = ["system", "user", "assistant", "tool"]
    expected = {  # mode -> roles trained (not last, not in the last turn) / (last, in the last turn)
        TrainOnWhat.LAST_ASSISTANT_MESSAGE: (set(), {"assistant"}),
        TrainOnWhat.LAST_ASSISTANT_TURN: (set(), {"assistant"}),
        TrainOnWhat.ALL_ASSISTANT_MESSAGES: ({"assistant"}, {"assistant"}),
        TrainOnWhat.ALL_MESSAGES: (set(roles), set(roles)),
        TrainOnWhat.ALL_TOKENS: (set(roles), set(roles)),
        TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES: ({"system", "user"}, {"system", "user"}),
    }
    for mode, (early, late) in expected.items():
        for role in roles:
            m: Message = {"role": role, "content": "x"}
            assert output_is_trained(m, ctx(False, False), mode) is (role in early), (mode, role)
            assert output_is_trained(m, ctx(True, True), mode) is (role in late), (mode, role)
    # last message vs. last turn are separate conditions
    a: Message = {"role": "assistant", "content": "x"}
    assert output_is_trained(a, ctx(True, False), TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    assert not output_is_trained(a, ctx(True, False), TrainOnWhat.LAST_ASSISTANT_TURN)
    assert output_is_trained(a, ctx(False, True), TrainOnWhat.LAST_ASSISTANT_TURN)
    assert not output_is_trained(a, ctx(False, True), TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    for flag in (True, False):
        m = {"role": "user", "content": "x", "trainable": flag}
        assert output_is_trained(m, ctx(False, False), TrainOnWhat.CUSTOMIZED) is flag  # type: ignore[arg-type]
    with pytest.raises(RendererError):
        output_is_trained(a, ctx(True, True), "nonsense")  # type: ignore[arg-type]


class Recording(Llama3Renderer):
    """llama3's format, recording every context the core hands to the family hooks."""

    seen: list[Any]
    suffixes: list[Any]

    def render_message(self, msg: Message, ctx: Any) -> Any:
        self.seen.append(ctx)
        return super().render_message(msg, ctx)

    def generation_suffix(self, role: str, ctx: Any) -> Any:
        self.suffixes.append((role, ctx))
        return super().generation_suffix(role, ctx)


def test_contexts_handed_to_the_family(llama: Llama3Renderer) -> None:
    r = _sub(Recording, llama, seen=[], suffixes=[])
    conv: list[Message] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
        {"role": "assistant", "content": "a3"},
    ]
    r.build_supervised_example(conv, TrainOnWhat.ALL_MESSAGES)
    got = [(c.idx, c.is_last, c.prev, c.next, c.last_user_index, c.in_last_assistant_turn, c.for_prompt) for c in r.seen]
    assert got == [
        (i, i == 5, conv[i - 1] if i else None, conv[i + 1] if i < 5 else None, 3, i >= 4, False) for i in range(6)
    ]
    r.seen.clear()
    r.build_generation_prompt(conv[:4])
    got = [(c.idx, c.is_last, c.prev, c.next, c.last_user_index, c.in_last_assistant_turn, c.for_prompt) for c in r.seen]
    assert got[:4] == [(i, i == 3, conv[i - 1] if i else None, conv[i + 1] if i < 3 else None, 3, False, True) for i in range(4)]
    ((role, s),) = r.suffixes
    assert got[4:] == [(4, True, conv[3], None, 3, True, True)]  # the default suffix renders an empty message
    assert role == "assistant"
    assert (s.idx, s.is_last, s.prev, s.next, s.last_user_index, s.in_last_assistant_turn, s.for_prompt) == (
        4, True, conv[3], None, 3, True, True,
    )
    r.suffixes.clear()
    r.build_generation_prompt([])
    assert r.suffixes[0][1].prev is None and r.suffixes[0][1].last_user_index == -1


def test_generation_prompt_for_another_role_and_prefill(llama: Llama3Renderer) -> None:
    enc = llama.enc
    header = [llama.start_header, *enc.encode("user"), llama.end_header, *enc.encode("\n\n")]
    got = llama.build_generation_prompt(CONV, role="user").to_ints()
    assert got[-len(header) :] == header
    base = llama.build_generation_prompt(CONV[:2]).to_ints()
    assert llama.build_generation_prompt(CONV[:2], prefill="").to_ints() == base
    assert llama.build_generation_prompt(CONV[:2], prefill="Sure").to_ints() == [*base, *enc.encode("Sure")]
    assert llama.build_generation_prompt([]).to_ints() == [llama.bos, llama.start_header, *enc.encode("assistant"),
                                                           llama.end_header, *enc.encode("\n\n")]


def test_supervised_refusals_and_customized(llama: Llama3Renderer) -> None:
    with pytest.raises(RendererError):
        llama.build_supervised_example([])
    with pytest.raises(RendererError):
        llama.build_supervised_example(CONV[:2], TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    # the other modes accept a conversation that ends with a user message
    _, w = llama.build_supervised_example(CONV[:2], TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES)
    assert w.sum() > 0
    _, w = llama.build_supervised_example(CONV[:2], TrainOnWhat.LAST_ASSISTANT_TURN)
    assert w.sum() == 0
    flagged = [{**m, "trainable": False} for m in CONV]
    _, w = llama.build_supervised_example(flagged, TrainOnWhat.CUSTOMIZED)  # type: ignore[arg-type]
    assert w.sum() == 0
    with pytest.raises(RendererError):
        llama.build_supervised_example(flagged, TrainOnWhat.ALL_MESSAGES)  # type: ignore[arg-type]
    flagged[1]["trainable"] = True
    mi, w = llama.build_supervised_example(flagged, "customized")  # type: ignore[arg-type]
    user = [*llama.enc.encode("Hi"), llama.eot]
    trained = [t for t, x in zip(mi.to_ints(), w) if x]
    assert trained == user


def test_check_messages(llama: Llama3Renderer) -> None:
    bad: list[Any] = [
        ["not a dict"],
        [{"role": "user"}],
        [{"content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": "user", "content": ["text"]}],
        [{"role": "user", "content": [{"type": "audio"}]}],
        [{"role": "user", "content": [{"text": "no type"}]}],
        [{"role": "assistant", "content": "", "tool_calls": [object()]}],
        [{"role": "tool", "content": "1"}],
        [{"role": "tool_declare", "content": "[]"}],
    ]
    for msgs in bad:
        with pytest.raises(RendererError):
            llama.check_messages(msgs)
    llama.check_messages([{"role": "user", "content": []}, {"role": "assistant", "content": "", "tool_calls": []}])
    llama.check_messages([{"role": "user", "content": [{"type": "text", "text": "x"}]}])

    class Capable(Llama3Renderer):
        supports_thinking = True
        supports_tools = True
        supports_images = True

    cap = _sub(Capable, llama)
    cap.check_messages(
        [
            {"role": "tool_declare", "content": "[]"},
            {"role": "user", "content": [{"type": "image", "image": b""}, {"type": "text", "text": "x"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}], "tool_calls": [object()]},
            {"role": "tool", "content": "1"},
        ]
    )


def test_reasons() -> None:
    from cookbook.renderers.base import Renderer

    r = Renderer.reasons
    assert r(None, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]})  # type: ignore[arg-type]
    assert not r(None, {"role": "assistant", "content": [{"type": "thinking", "thinking": " "}]})  # type: ignore[arg-type]
    assert r(None, {"role": "assistant", "content": "<think>hm</think>ok"})  # type: ignore[arg-type]
    assert not r(None, {"role": "assistant", "content": "ok"})  # type: ignore[arg-type]


def test_base_class_defaults(llama: Llama3Renderer) -> None:
    from cookbook.renderers.base import Renderer

    base = _sub(Renderer, llama)
    assert base.bos_tokens() == []
    assert base.parse_text(" x ") == {"role": "assistant", "content": " x "}
    with pytest.raises(NotImplementedError):
        base.get_stop_sequences()
    with pytest.raises(NotImplementedError):
        base.build_generation_prompt([{"role": "user", "content": "x"}])
    assert not (base.has_extension_property or base.disables_thinking or base.supports_images)
    assert base.eos_token_id is None and not base.literal_added_tokens
    assert llama.stop_token_ids() == [llama.eot]
    assert llama.last_assistant_turn_start(CONV) == 2 and llama.last_assistant_turn_start([]) == 0


def test_split_and_parse_response(llama: Llama3Renderer) -> None:
    enc, eot = llama.enc, llama.eot
    hi = enc.encode("Hi")
    assert llama.split_response([eot]) == ([], ParseTermination.STOP_SEQUENCE)
    assert llama.parse_response([eot]) == ({"role": "assistant", "content": ""}, ParseTermination.STOP_SEQUENCE)
    assert llama.split_response([np.int64(t) for t in [*hi, eot]]) == (hi, ParseTermination.STOP_SEQUENCE)
    assert llama.split_response(hi) == (hi, ParseTermination.MALFORMED)
    assert llama.split_response([]) == ([], ParseTermination.MALFORMED)
    for bad in ([eot, *hi], [*hi, eot, *hi], [eot, eot]):
        with pytest.raises(RendererError):
            llama.split_response(bad)

    class Shouting(Llama3Renderer):
        """A family with its own parse_text (and, set below, an end-of-sequence token: the BOS id, for the test)."""

        def parse_text(self, text: str) -> Message:
            return {"role": "assistant", "content": text.upper()}

    s = _sub(Shouting, llama, eos_token_id=llama.bos)
    assert s.parse_response([*hi, eot]) == ({"role": "assistant", "content": "HI"}, ParseTermination.STOP_SEQUENCE)
    assert s.parse_response([*hi, s.bos]) == ({"role": "assistant", "content": "HI"}, ParseTermination.EOS)
    assert s.parse_response([s.bos]) == ({"role": "assistant", "content": ""}, ParseTermination.EOS)
    # a truncated response is its raw text, not handed to parse_text
    assert s.parse_response(hi) == ({"role": "assistant", "content": "Hi"}, ParseTermination.MALFORMED)
    assert s.split_response([s.bos, *hi]) == ([s.bos, *hi], ParseTermination.MALFORMED)
    assert s.split_response([]) == ([], ParseTermination.MALFORMED)


class Prefilling(Llama3Renderer):
    """A toy family (llama3's format) whose generation prompt pre-fills ``[T]``, which every assistant output
    starts with, and whose supervised example ends with a stop overlap ``<END>`` after the final message."""

    supports_thinking = True
    suffix_text = "[T]"

    def render_message(self, msg: Message, ctx: Any) -> Any:
        r = super().render_message(msg, ctx)
        out = ["[T]", *r.output] if msg["role"] == "assistant" else r.output
        return type(r)(header=r.header, output=out, stop_overlap=["<END>"])

    def generation_suffix(self, role: str, ctx: Any) -> Any:
        return [*super().generation_suffix(role, ctx), self.suffix_text]


def _trained_text(r: Any, msgs: Any, mode: Any) -> str:
    mi, w = r.build_supervised_example(msgs, mode)
    return r.decode([t for t, x in zip(mi.to_ints(), w) if x])


def test_generation_prompt_prefill_is_not_trained(llama: Llama3Renderer) -> None:
    p = _sub(Prefilling, llama)
    conv: list[Message] = [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert p.decode(p.build_generation_prompt(conv[:3]).to_ints()).endswith("assistant<|end_header_id|>\n\n[T]")
    assert _trained_text(p, conv, TrainOnWhat.LAST_ASSISTANT_MESSAGE) == "a2<|eot_id|><END>"
    assert _trained_text(p, conv, TrainOnWhat.LAST_ASSISTANT_TURN) == "a2<|eot_id|><END>"
    assert _trained_text(p, conv, TrainOnWhat.ALL_ASSISTANT_MESSAGES) == "[T]a1<|eot_id|>[T]a2<|eot_id|><END>"
    assert _trained_text(p, conv, TrainOnWhat.ALL_MESSAGES) == "u1<|eot_id|>[T]a1<|eot_id|>u2<|eot_id|>[T]a2<|eot_id|><END>"
    # the overlap follows the final message with that message's weight, once
    assert _trained_text(p, conv[:3], TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES) == "u1<|eot_id|>u2<|eot_id|><END>"
    assert _trained_text(p, conv, TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES) == "u1<|eot_id|>u2<|eot_id|>"
    # last turn of two assistant messages: the prefill before the first is the generation prompt's
    turn: list[Message] = [*conv[:3], {"role": "assistant", "content": "a2"}, {"role": "assistant", "content": "a3"}]
    assert _trained_text(p, turn, TrainOnWhat.LAST_ASSISTANT_TURN) == "a2<|eot_id|>[T]a3<|eot_id|><END>"
    # after the last user message comes a system message: nothing the generation prompt supplies is untrained
    sys_then: list[Message] = [conv[0], {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]
    assert _trained_text(p, sys_then, TrainOnWhat.LAST_ASSISTANT_TURN) == "[T]a<|eot_id|><END>"
    assert _trained_text(p, sys_then, TrainOnWhat.LAST_ASSISTANT_MESSAGE) == "a<|eot_id|><END>"
    # a generation prompt that is not a prefix of the example (here: another pre-fill) untrains nothing
    p.suffix_text = "[X]"
    assert _trained_text(p, conv, TrainOnWhat.LAST_ASSISTANT_MESSAGE) == "[T]a2<|eot_id|><END>"


def test_disable_thinking_refuses_trained_reasoning(llama: Llama3Renderer) -> None:
    class NoThinking(Prefilling):
        disables_thinking = True

    r = _sub(NoThinking, llama)
    thought: Message = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "a"}]}
    inline: Message = {"role": "assistant", "content": "<think>hm</think>a"}
    u: Message = {"role": "user", "content": "<think>user text</think>"}
    for last in (thought, inline):
        for mode in (TrainOnWhat.LAST_ASSISTANT_MESSAGE, TrainOnWhat.LAST_ASSISTANT_TURN):
            with pytest.raises(RendererError):
                r.build_supervised_example([u, last], mode)
        # no user message: the whole conversation is the last turn
        with pytest.raises(RendererError):
            r.build_supervised_example([last, {"role": "assistant", "content": "b"}], TrainOnWhat.LAST_ASSISTANT_TURN)
        r.build_supervised_example([last, {"role": "assistant", "content": "b"}], TrainOnWhat.LAST_ASSISTANT_MESSAGE)
        # other modes are not refused here
        r.build_supervised_example([u, last], TrainOnWhat.ALL_ASSISTANT_MESSAGES)
    # reasoning in history (before the trained part) and reasoning-like user text are fine
    ok = [u, thought, u, {"role": "assistant", "content": "b"}]
    assert _trained_text(r, ok, TrainOnWhat.LAST_ASSISTANT_MESSAGE) == "b<|eot_id|><END>"
    assert _trained_text(r, ok, TrainOnWhat.LAST_ASSISTANT_TURN) == "b<|eot_id|><END>"
    with pytest.raises(RendererError):
        r.build_supervised_example([u, thought, {"role": "assistant", "content": "b"}], TrainOnWhat.LAST_ASSISTANT_TURN)
    r.build_supervised_example([u, thought, {"role": "assistant", "content": "b"}], TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    # a thinking renderer (disables_thinking off) trains it
    assert _trained_text(_sub(Prefilling, llama), [u, inline], TrainOnWhat.LAST_ASSISTANT_MESSAGE) == "<think>hm</think>a<|eot_id|><END>"


def test_images_reach_the_model_input(llama: Llama3Renderer) -> None:
    import tinker

    from cookbook.renderers.kit.vision import ImageSegment, make_png

    png = make_png(2, 2)
    seg = ImageSegment(data=png, format="png", width=2, height=2, expected_tokens=4, pad_token=0)

    class Seeing(Llama3Renderer):
        supports_images = True

        def render_message(self, msg: Message, ctx: Any) -> Any:
            r = super().render_message(msg, ctx)
            if isinstance(msg["content"], list) and any(p["type"] == "image" for p in msg["content"]):
                return type(r)(header=r.header, output=[seg, *r.output])
            return r

    v = _sub(Seeing, llama)
    conv: list[Any] = [
        {"role": "user", "content": [{"type": "image", "image": png}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "Dots."},
    ]
    mi = v.build_generation_prompt(conv[:1])
    kinds = [type(c).__name__ for c in mi.chunks]
    assert kinds == ["EncodedTextChunk", "ImageChunk", "EncodedTextChunk"]
    assert isinstance(mi.chunks[1], tinker.types.ImageChunk) and mi.chunks[1].expected_tokens == 4
    header = [llama.bos, llama.start_header, *llama.enc.encode("user"), llama.end_header, *llama.enc.encode("\n\n")]
    assert list(mi.chunks[0].tokens) == header
    smi, w = v.build_supervised_example(conv)
    assert [type(c).__name__ for c in smi.chunks] == kinds
    assert smi.length == len(w) and w.dtype == np.float32
    assert w[len(header) : len(header) + 4].tolist() == [0.0] * 4
    assert w.sum() == len(llama.enc.encode("Dots.")) + 1
    # text-only renderers get a plain ModelInput
    assert [type(c).__name__ for c in llama.build_generation_prompt(CONV).chunks] == ["EncodedTextChunk"]


def test_subclasses_written_against_the_text_only_signatures_keep_working(llama: Llama3Renderer) -> None:
    """A family that overrides supervised_tokens / generation_prompt_tokens without the image list."""

    class Old(Llama3Renderer):
        def supervised_tokens(self, messages: Any, train_on_what: Any = "last_assistant_message") -> Any:
            return super().supervised_tokens(messages, train_on_what)

        def generation_prompt_tokens(self, messages: Any, role: str = "assistant", prefill: Any = None) -> Any:
            return super().generation_prompt_tokens(messages, role, prefill)

    old = _sub(Old, llama)
    mi, w = old.build_supervised_example(CONV)
    assert mi.to_ints() == llama.build_supervised_example(CONV)[0].to_ints() and w.dtype == np.float32
    assert old.build_generation_prompt(CONV[:2], "assistant", "x").to_ints() == llama.build_generation_prompt(
        CONV[:2], prefill="x").to_ints()

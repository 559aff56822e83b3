"""Images in the Qwen3-VL Instruct renderer (``qwen3_vl_instruct``): ``ImageChunk`` s with Qwen3-VL's token
count and the ``<|vision_start|>`` / ``<|vision_end|>`` markers.

Oracle: tml-renderers 0.2.1's ``Qwen3.vision_instruct()`` (Thinking Machines' official
renderers; need torch, test-time only): token-exact ids of generation prompts and SFT examples, their weights, and
each image's position and token count (``num_tokens``). No Qwen3-VL chat template reaches a registry, so the
template is not an oracle here (the spec files say so).

The images are PNGs written here with zlib/struct (:func:`cookbook.renderers.kit.vision.make_png`).
"""

from __future__ import annotations

from typing import Any

import pytest

from cookbook.errors import RendererError
from cookbook.renderers import TrainOnWhat, get_renderer
from cookbook.renderers.base import ParseTermination
from cookbook.renderers.kit.vision import QWEN3_VL, data_uri, make_png
from cookbook.tokenizers import get_tokenizer

NAMES = {"qwen3_vl_instruct": "vision_instruct", "qwen3_vl": "vision"}  # ours -> tml-renderers' Qwen3 constructor
SIZES = [(32, 32), (64, 48), (100, 37), (8, 8), (640, 480), (2000, 3000), (500, 3)]


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("Qwen/Qwen3-VL-30B-A3B-Instruct")


@pytest.fixture(scope="module", params=sorted(NAMES))
def pair(request: Any, tok: Any) -> tuple[Any, Any]:
    renderers = pytest.importorskip("tml_renderers.renderers", reason="tml-renderers 0.2.1 (test extra) is the oracle")
    pytest.importorskip("PIL", reason="tml-renderers decodes data: URI images with Pillow")
    return get_renderer(request.param, tok), getattr(renderers.Qwen3, NAMES[request.param])()


def _convo(w: int, h: int, seed: int = 0, text: str = "What is this?") -> list[Any]:
    return [
        {"role": "user", "content": [{"type": "image", "image": make_png(w, h, seed)}, {"type": "text", "text": text}]},
        {"role": "assistant", "content": "A gradient."},
    ]


def _flat(model_input: Any) -> tuple[list[int], list[tuple[int, int, bytes]]]:
    """Text tokens with image chunks as (start, expected_tokens, data)."""
    toks: list[int] = []
    imgs: list[tuple[int, int, bytes]] = []
    pos = 0
    for ch in model_input.chunks:
        if ch.type == "image":
            imgs.append((pos, ch.expected_tokens, bytes(ch.data)))
            pos += ch.expected_tokens
        else:
            toks.extend(ch.tokens)
            pos += len(ch.tokens)
    return toks, imgs


def _tml_messages(convo: list[Any]) -> Any:
    from tml_renderers import chat

    oss = []
    for m in convo:
        content = m["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": data_uri(p["image"])}} if p["type"] == "image" else p
                for p in content
            ]
        oss.append({"role": m["role"], "content": content})
    return chat.OpenAIMessage.from_oss_messages(oss)


def _tml_flat(spans: Any) -> tuple[list[int], list[tuple[int, int]]]:
    from tml_renderers import chat

    toks: list[int] = []
    imgs: list[tuple[int, int]] = []
    pos = 0
    for s in spans:
        inner = s.span
        if isinstance(inner, chat.ImageAssetPointerTokenSpan):
            imgs.append((pos, inner.num_tokens))
            pos += inner.num_tokens
        else:
            toks.extend(inner.tokens)
            pos += len(inner.tokens)
    return toks, imgs


@pytest.mark.parametrize("size", SIZES)
def test_generation_prompt_matches_tml(pair: tuple[Any, Any], size: tuple[int, int]) -> None:
    ours, tml = pair
    convo = _convo(*size)
    toks, imgs = _flat(ours.build_generation_prompt(convo[:1]))
    ref_toks, ref_imgs = _tml_flat(tml.render_for_completion(_tml_messages(convo[:1]))[0])
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs
    assert imgs[0][1] == QWEN3_VL.num_tokens(*size)
    assert imgs[0][2] == make_png(*size)


@pytest.mark.parametrize("size", [(64, 48), (640, 480)])
def test_supervised_example_matches_tml(pair: tuple[Any, Any], size: tuple[int, int]) -> None:
    ours, tml = pair
    convo = _convo(*size)
    mi, weights = ours.build_supervised_example(convo)
    (example,) = tml.render_for_sft(_tml_messages(convo))
    toks, imgs = _flat(mi)
    ref_toks, ref_imgs = _tml_flat(example.input_token_spans)
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs
    assert list(weights) == [float(w) for w in example.per_token_loss_weight_unshifted]


def test_two_images_text_between_and_history(pair: tuple[Any, Any]) -> None:
    ours, tml = pair
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image", "image": make_png(40, 40, 1)},
            {"type": "text", "text": "and"},
            {"type": "image", "image": make_png(300, 90, 2)},
        ]},
        {"role": "assistant", "content": "The second is wider."},
        {"role": "user", "content": [{"type": "image", "image": make_png(64, 64, 3)}]},
    ]
    toks, imgs = _flat(ours.build_generation_prompt(convo))
    ref_toks, ref_imgs = _tml_flat(tml.render_for_completion(_tml_messages(convo))[0])
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs


@pytest.mark.parametrize("history_thinks", [False, True])
def test_thinking_turn_with_images_matches_tml(tok: Any, history_thinks: bool) -> None:
    """qwen3_vl: a reasoning reply after images and an earlier turn (its reasoning stripped from history); ids and
    weights of the generation prompt and of the last SFT example as tml's (tml starts a new example where history
    reasoning is stripped, so its last example is the one with the trained reply)."""
    renderers = pytest.importorskip("tml_renderers.renderers", reason="tml-renderers 0.2.1 (test extra) is the oracle")
    pytest.importorskip("PIL", reason="tml-renderers decodes data: URI images with Pillow")
    ours, tml = get_renderer("qwen3_vl", tok), renderers.Qwen3.vision()
    earlier: Any = [{"type": "thinking", "thinking": "Four equal sides."}, {"type": "text", "text": "A square."}]
    convo: list[Any] = [
        {"role": "user", "content": [{"type": "image", "image": make_png(48, 48, 4)}, {"type": "text", "text": "Shape?"}]},
        {"role": "assistant", "content": earlier if history_thinks else "A square."},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}, {"type": "image", "image": make_png(80, 40, 5)}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "A gradient\nof grey."}, {"type": "text", "text": "Grey."}]},
    ]
    toks, imgs = _flat(ours.build_generation_prompt(convo[:-1]))
    ref_toks, ref_imgs = _tml_flat(tml.render_for_completion(_tml_messages(convo[:-1]))[0])
    assert (toks, [(s, n) for s, n, _ in imgs]) == (ref_toks, ref_imgs)
    mi, weights = ours.build_supervised_example(convo)
    ex = tml.render_for_sft(_tml_messages(convo))[-1]
    toks, imgs = _flat(mi)
    ref_toks, ref_imgs = _tml_flat(ex.input_token_spans)
    assert (toks, [(s, n) for s, n, _ in imgs]) == (ref_toks, ref_imgs)
    assert list(weights) == [float(w) for w in ex.per_token_loss_weight_unshifted]


def test_qwen3_vl_parses_a_response_that_starts_inside_the_think_block(tok: Any) -> None:
    """The prompt ends with ``<think>\n``, so the sampled text opens with the reasoning and closes the block."""
    r = get_renderer("qwen3_vl", tok)
    sampled = [*tok.encode("A gradient.\n</think>\n\nGrey.", add_special_tokens=False), r.get_stop_sequences()[0]]
    msg, termination = r.parse_response(sampled)
    assert termination == ParseTermination.STOP_SEQUENCE
    assert msg["content"] == [{"type": "thinking", "thinking": "A gradient."}, {"type": "text", "text": "Grey."}]


# ---------------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", sorted(NAMES))
def test_image_positions_are_never_trained(tok: Any, name: str) -> None:
    r: Any = get_renderer(name, tok)
    n = QWEN3_VL.num_tokens(64, 48)
    for mode in TrainOnWhat:
        if mode is TrainOnWhat.CUSTOMIZED:
            continue
        tokens, weights = r.supervised_tokens(_convo(64, 48), mode)
        assert [w for t, w in zip(tokens, weights, strict=True) if t == r.image_pad] == [0.0] * n
        assert len(tokens) == r.build_supervised_example(_convo(64, 48), mode)[0].length


@pytest.mark.parametrize("name", sorted(NAMES))
def test_images_outside_user_and_system_messages_are_refused(tok: Any, name: str) -> None:
    r = get_renderer(name, tok)
    img = {"type": "image", "image": make_png(32, 32)}
    for bad in (
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [img]}],
        [{"role": "user", "content": "hi"}, {"role": "tool", "content": [img], "tool_call_id": "c"}],
    ):
        with pytest.raises(RendererError):
            r.build_supervised_example(bad, TrainOnWhat.ALL_MESSAGES)
    with pytest.raises(RendererError):
        r.build_generation_prompt([{"role": "user", "content": [{"type": "image", "image": b"not an image"}]}])


def test_text_only_qwen3_still_refuses_images(tok: Any) -> None:
    with pytest.raises(RendererError):
        get_renderer("qwen3_instruct", tok).build_generation_prompt(_convo(32, 32)[:1])

"""Images in the qwen3_5 renderer: ``ImageChunk`` s with the image processor's token count.

Oracles:

* tml-renderers 0.2.1's ``Qwen35`` (Thinking Machines' official renderer; needs torch, test-time only):
  token-exact ids and weights of generation prompts and SFT examples, image chunk sizes (``num_tokens``);
* the Qwen3.5 chat template (its real tokenizer): the decoded text with the single ``<|image_pad|>`` that the
  HF processor expands to ``expected_tokens`` copies.

Template and tml-renderers disagree on whitespace next to an image: the template trims the message content as a
whole (``<|vision_end|> What`` keeps its space), tml-renderers trims each text part. The renderer follows the
template (the qwen3_5 spec's oracle); the tml comparisons use text parts without surrounding whitespace.

The images are PNGs written here with zlib/struct (:func:`cookbook.renderers.kit.vision.make_png`).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from cookbook.errors import RendererError
from cookbook.renderers import TrainOnWhat
from cookbook.renderers.kit.vision import QWEN3_VL, data_uri, image_header, make_png
from cookbook.renderers.qwen3 import Qwen3Renderer
from cookbook.renderers.qwen3_5 import Qwen3_5Renderer
from cookbook.tokenizers import get_tokenizer

SIZES = [(32, 32), (64, 48), (100, 37), (1000, 20), (8, 8), (640, 480), (2000, 3000), (33, 31), (500, 3)]


@pytest.fixture(scope="module")
def renderer() -> Qwen3_5Renderer:
    return Qwen3_5Renderer(get_tokenizer("Qwen/Qwen3.5-4B"))


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


def test_png_header_and_jpeg_header() -> None:
    assert image_header(make_png(17, 5)) == ("png", 17, 5)
    # a minimal JPEG: SOI, an APP0 segment, SOF0 with 40x30
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + bytes(9)
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 30, 40, 1) + bytes(3)
    assert image_header(b"\xff\xd8" + app0 + sof0 + b"\xff\xd9") == ("jpeg", 40, 30)
    for bad in (b"", b"GIF89a....", make_png(4, 4)[:20], b"\xff\xd8\xff\xe0\x00\x10"):
        with pytest.raises(ValueError):
            image_header(bad)


# ---------------------------------------------------------------------------------------------- tml oracle


@pytest.fixture(scope="module")
def tml() -> Any:
    renderers = pytest.importorskip("tml_renderers.renderers", reason="tml-renderers 0.2.1 (test extra) is the oracle")
    pytest.importorskip("PIL", reason="tml-renderers decodes data: URI images with Pillow")
    return renderers.Qwen35()


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
def test_generation_prompt_matches_tml(renderer: Qwen3_5Renderer, tml: Any, size: tuple[int, int]) -> None:
    convo = _convo(*size)
    ours = renderer.build_generation_prompt(convo[:1])
    spans, _ = tml.render_for_completion(_tml_messages(convo[:1]))
    toks, imgs = _flat(ours)
    ref_toks, ref_imgs = _tml_flat(spans)
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs
    assert imgs[0][1] == QWEN3_VL.num_tokens(*size)
    assert imgs[0][2] == make_png(*size)
    assert ours.length == sum(n for _, n in ref_imgs) + len(ref_toks)


@pytest.mark.parametrize("size", [(64, 48), (640, 480)])
def test_supervised_example_matches_tml(renderer: Qwen3_5Renderer, tml: Any, size: tuple[int, int]) -> None:
    convo = _convo(*size)
    mi, weights = renderer.build_supervised_example(convo)
    (example,) = tml.render_for_sft(_tml_messages(convo))
    toks, imgs = _flat(mi)
    ref_toks, ref_imgs = _tml_flat(example.input_token_spans)
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs
    assert list(weights) == [float(w) for w in example.per_token_loss_weight_unshifted]


def test_two_images_and_history(renderer: Qwen3_5Renderer, tml: Any) -> None:
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
    toks, imgs = _flat(renderer.build_generation_prompt(convo))
    ref_toks, ref_imgs = _tml_flat(tml.render_for_completion(_tml_messages(convo))[0])
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs


# ---------------------------------------------------------------------------------------------- template oracle


def test_text_matches_template_with_expanded_pad(renderer: Qwen3_5Renderer) -> None:
    """The chat template writes one <|image_pad|>; the processor expands it to expected_tokens copies."""
    tok = renderer.tokenizer
    convo = _convo(64, 48, text=" What is this? ")
    tpl = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is this? "}]}],
        tokenize=False, add_generation_prompt=True,
    )
    n = QWEN3_VL.num_tokens(64, 48)
    expected = tpl.replace("<|image_pad|>", "<|image_pad|>" * n)
    tokens = renderer.generation_prompt_tokens(convo[:1])
    assert tok.decode(tokens) == expected


# ---------------------------------------------------------------------------------------------- behaviour


def test_image_positions_are_never_trained(renderer: Qwen3_5Renderer) -> None:
    pad = renderer.image_pad
    for mode in TrainOnWhat:
        if mode is TrainOnWhat.CUSTOMIZED:
            continue
        tokens, weights = renderer.supervised_tokens(_convo(64, 48), mode)
        assert [w for t, w in zip(tokens, weights) if t == pad] == [0.0] * QWEN3_VL.num_tokens(64, 48)
        assert len(tokens) == renderer.build_supervised_example(_convo(64, 48), mode)[0].length


def test_image_inputs_accepted(renderer: Qwen3_5Renderer, tmp_path: Any) -> None:
    png = make_png(64, 48)
    path = tmp_path / "x.png"
    path.write_bytes(png)
    for image in (png, data_uri(png), str(path), f"file://{path}"):
        convo = [{"role": "user", "content": [{"type": "image", "image": image}]}]
        assert _flat(renderer.build_generation_prompt(convo))[1][0][2] == png


@pytest.mark.parametrize(
    "image", [b"not an image", "https://example.com/cat.png", "data:image/png,abc", 42, make_png(1000, 2)]
)
def test_bad_images_raise(renderer: Qwen3_5Renderer, image: Any) -> None:
    with pytest.raises(RendererError):
        renderer.build_generation_prompt([{"role": "user", "content": [{"type": "image", "image": image}]}])


def test_text_only_renderer_refuses_images() -> None:
    r = Qwen3Renderer(get_tokenizer("Qwen/Qwen3-8B"))
    with pytest.raises(RendererError):
        r.build_generation_prompt(_convo(32, 32)[:1])
    with pytest.raises(RendererError):
        r.build_supervised_example(_convo(32, 32))

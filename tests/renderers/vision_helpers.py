"""Shared helpers of the vision tests (test_vision.py, test_vision_qwen3_vl.py, test_kimi_k25_renderer.py): image
messages, our ``ModelInput`` and tml-renderers' token spans flattened to comparable (tokens, images) pairs, and the
comparisons with tml-renderers (Thinking Machines' official renderers, the oracle; they need torch and Pillow, so
they are imported at test time only and a test skips without them).

The images are PNGs written with zlib/struct (:func:`cookbook.renderers.kit.vision.make_png`).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import pytest

from cookbook.renderers import ToolCall, TrainOnWhat
from cookbook.renderers.kit.vision import data_uri, make_png

#: (start, expected_tokens, PNG bytes) of each image chunk
Images = list[tuple[int, int, bytes]]


def image(width: int, height: int, seed: int = 0) -> dict[str, Any]:
    """An image part holding :func:`png` bytes."""
    return {"type": "image", "image": png(width, height, seed)}


def png(width: int, height: int, seed: int = 0) -> bytes:
    """make_png for small images; a large one (over a megapixel) is a solid PNG built row by row in C (make_png
    loops per pixel)."""
    if width * height <= 1_000_000:
        return make_png(width, height, seed)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    row = b"\x00" + bytes([90, 120, 200]) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 1)) + chunk(b"IEND", b"")


def image_convo(width: int, height: int, seed: int = 0, text: str = "What is this?") -> list[Any]:
    """A user message with an image then text, and the assistant's reply."""
    return [
        {"role": "user", "content": [image(width, height, seed), {"type": "text", "text": text}]},
        {"role": "assistant", "content": "A gradient."},
    ]


def role_convos(call_id: str = "functions.screenshot:0") -> dict[str, list[Any]]:
    """An image in each role but the user's: a tool result that is one image (tml-renderers writes each part of a
    tool message as a tool response of its own, so a one-part result is the one every oracle writes alike), an
    assistant history message with text around an image, and a system message with text and an image."""
    call = ToolCall(name="screenshot", arguments=json.dumps({"url": "https://example.com"}), id=call_id)
    return {
        "tool": [
            {"role": "user", "content": "Show me the page."},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": [image(40, 40, 1)], "tool_call_id": call_id, "name": "screenshot"},
            {"role": "assistant", "content": "A gradient page."},
        ],
        "assistant": [
            {"role": "user", "content": "Draw a square."},
            {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, image(32, 32, 2),
                                              {"type": "text", "text": "Done."}]},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You are welcome."},
        ],
        "system": [
            {"role": "system", "content": [{"type": "text", "text": "Look at this:"}, image(48, 32, 3)]},
            {"role": "user", "content": "What did you see?"},
            {"role": "assistant", "content": "A gradient."},
        ],
    }


def flat(model_input: Any) -> tuple[list[int], Images]:
    """Text tokens of our ``ModelInput`` with its image chunks as (start, expected_tokens, data)."""
    toks: list[int] = []
    imgs: Images = []
    pos = 0
    for ch in model_input.chunks:
        if ch.type == "image":
            imgs.append((pos, ch.expected_tokens, bytes(ch.data)))
            pos += ch.expected_tokens
        else:
            toks.extend(ch.tokens)
            pos += len(ch.tokens)
    return toks, imgs


# ---------------------------------------------------------------------------------------------- tml-renderers


def tml_renderers() -> Any:
    """``tml_renderers.renderers``, or skip the test (tml-renderers and Pillow are test-time oracles)."""
    renderers = pytest.importorskip("tml_renderers.renderers", reason="tml-renderers 0.2.1 (test extra) is the oracle")
    pytest.importorskip("PIL", reason="tml-renderers decodes data: URI images with Pillow")
    return renderers


def tml_messages(convo: list[Any]) -> Any:
    """Our messages as tml-renderers' ``OpenAIMessage`` s (images as ``data:`` URIs, tool calls OpenAI-style)."""
    from tml_renderers import chat

    oss = []
    for m in convo:
        content = m["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": data_uri(p["image"])}} if p["type"] == "image" else p
                for p in content
            ]
        d: dict[str, Any] = {"role": m["role"], "content": content}
        if m.get("tool_calls"):
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m["tool_calls"]]
        for k in ("tool_call_id", "name"):
            if k in m:
                d[k] = m[k]
        oss.append(d)
    return chat.OpenAIMessage.from_oss_messages(oss)


def tml_flat(spans: Any) -> tuple[list[int], list[tuple[int, int]]]:
    """Text tokens of tml-renderers' token spans with its images as (start, num_tokens)."""
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


def assert_prompt_matches_tml(ours: Any, tml: Any, convo: list[Any]) -> Images:
    """Our generation prompt for ``convo`` equals tml's ``render_for_completion``: text tokens and each image's
    position and token count. Returns our images."""
    toks, imgs = flat(ours.build_generation_prompt(convo))
    ref_toks, ref_imgs = tml_flat(tml.render_for_completion(tml_messages(convo))[0])
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs
    return imgs


def assert_sft_matches_tml(
    ours: Any, tml: Any, convo: list[Any], train_on_what: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_MESSAGE,
    example: int | None = None,
) -> Images:
    """Our supervised example equals tml's ``render_for_sft`` example (the only one, or the one of index ``example``:
    tml starts a new example where it strips history reasoning, so its last one holds the trained reply): text
    tokens, images, per-token weights. Returns our images."""
    mi, weights = ours.build_supervised_example(convo, train_on_what)
    examples = tml.render_for_sft(tml_messages(convo))
    if example is None:
        assert len(examples) == 1, f"tml-renderers wrote {len(examples)} examples"
    ex = examples[example or 0]
    toks, imgs = flat(mi)
    ref_toks, ref_imgs = tml_flat(ex.input_token_spans)
    assert toks == ref_toks
    assert [(s, n) for s, n, _ in imgs] == ref_imgs
    assert list(weights) == [float(w) for w in ex.per_token_loss_weight_unshifted]
    return imgs


def assert_image_prompt_matches_tml(ours: Any, tml: Any, size: tuple[int, int], config: Any) -> None:
    """One image between two text parts of a user message: our generation prompt equals tml's, and the image
    chunk carries ``config``'s token count and the PNG's bytes."""
    convo = [{"role": "user", "content": [{"type": "text", "text": "What is"}, image(*size),
                                          {"type": "text", "text": " this?"}]}]
    imgs = assert_prompt_matches_tml(ours, tml, convo)
    assert imgs[0][1] == config.num_tokens(*size)
    assert imgs[0][2] == png(*size)

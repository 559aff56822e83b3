"""Llama 3 / 3.1 / 3.3 Instruct.

``<|begin_of_text|>`` then, per message, ``<|start_header_id|>{role}<|end_header_id|>\\n\\n`` + text +
``<|eot_id|>``. The generation prompt ends with the assistant header; the model stops with ``<|eot_id|>``.

Deliberate deviation from the Llama 3.1 template (named ``no-date-header`` in specs/renderers/llama3.yaml):
the template always opens with a system block ``Cutting Knowledge Date: December 2023\\nToday Date: ...``;
this renderer, like tinker-cookbook's, omits it (the date would make training data depend on the day it was
rendered). The Llama 3.0 template has no such block and matches token for token.
"""

from __future__ import annotations

from cookbook.renderers.base import (
    Message,
    RenderContext,
    RenderedMessage,
    Renderer,
    text_of,
)


class Llama3Renderer(Renderer):
    name = "llama3"
    has_extension_property = True

    def __init__(self, tokenizer: object):
        super().__init__(tokenizer)
        self.bos = self.enc.special("<|begin_of_text|>")
        self.start_header = self.enc.special("<|start_header_id|>")
        self.end_header = self.enc.special("<|end_header_id|>")
        self.eot = self.enc.special("<|eot_id|>")

    def bos_tokens(self) -> list[int]:
        return [self.bos]

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        header = [self.start_header, *self.enc.encode_cached(msg["role"]), self.end_header, *self.enc.encode_cached("\n\n")]
        return RenderedMessage(header=[header], output=[text_of(msg["content"]), [self.eot]])

    def get_stop_sequences(self) -> list[int]:
        return [self.eot]

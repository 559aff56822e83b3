"""TMLv0 renderer (``tml_v0``): Thinking Machines' Inkling models (Inkling, Inkling-Small), o200k-based chat tokens.

Oracle: tml-renderers' ``tml_renderers.v0.Renderer`` with its ``O200kBaseChatTokenizer`` (no chat template exists
for this format); the Inkling tokenizer folder is exported from that tokenizer. Every message is framed on its own::

    <|message_{system|user}|><|content_text|>{text}<|end_message|>          (one per text part of a list)
    <|message_{role}|>[{tool name}]<|content_image|>[ImageChunk]<|end_message|>   (one per image part, any role)
    <|message_system|>tool_declare<|content_xml|>{tools as compact JSON}<|end_message|>
    <|message_tool|>{name}<|content_text|>{content}<|end_message|>
    <|message_model|><|content_thinking|>{reasoning}<|end_message|>        (one per thinking part)
    <|message_model|><|content_text|>{text}<|end_message|>
    <|message_model|>{name}<|content_invoke_tool_json|>{"name":...,"args":{...}}<|end_message|>   (per tool call)
    <|content_model_end_sampling|>                                          (ends every assistant message)

A system message ``<|message_system|><|content_text|>Thinking effort level: {effort}<|end_message|>`` follows the
leading system messages (tml's ``render_for_completion_with_effort``; tinker-cookbook's tml_v0 puts the same message
into supervised examples; default effort 0.9). The generation prompt adds no header: the model writes
``<|message_model|>`` itself, so an assistant message is output from its first token (trained whole). Stop token
``<|content_model_end_sampling|>``. Nothing depends on position, so the extension property holds.

Images: an image part is a message of its own, ``<|content_image|>`` then an ``ImageChunk`` of
:data:`cookbook.renderers.kit.vision.INKLING` tokens (``(width // 40 + 1) * ceil(height / 40)``, as tml's
``v0.Renderer`` counts them), in any role; the image positions are never trained (the ``<|content_image|>`` token of
an assistant's image message is output like the rest of the message). In token lists the positions hold the
``<|content_image|>`` id (the format has no pad token).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cookbook.errors import ConfigurationError, RendererError
from cookbook.renderers.base import (
    ContentPart,
    Message,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolCall,
    ToolSpec,
    UnparsedToolCall,
    has_images,
    text_of,
)
from cookbook.renderers.kit.parsing import assistant_message
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter
from cookbook.renderers.kit.vision import INKLING, image_segment

_MSG = {"system": "<|message_system|>", "user": "<|message_user|>", "assistant": "<|message_model|>", "tool": "<|message_tool|>"}
_TEXT, _THINK, _CALL, _XML = "<|content_text|>", "<|content_thinking|>", "<|content_invoke_tool_json|>", "<|content_xml|>"
_IMAGE = "<|content_image|>"
_END, _STOP = "<|end_message|>", "<|content_model_end_sampling|>"
_SYSTEMS = ("system", "tool_declare")
DEFAULT_EFFORT = 0.9  # tinker-cookbook 0.6.1 tml_v0: "DEFAULT_EFFORT: float = 0.9"


def _compact(value: Any, sort: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort)


class TmlV0Renderer(Renderer):
    """TMLv0 (Inkling). ``effort`` in [0, 1): the thinking-effort system message (None: no such message)."""

    name = "tml_v0"
    supports_thinking = True
    supports_tools = True
    supports_images = True
    has_extension_property = True

    CONTROL_TOKENS = (*_MSG.values(), _TEXT, _THINK, _CALL, _XML, _IMAGE, _END, _STOP)

    def __init__(self, tokenizer: Any, effort: float | None = DEFAULT_EFFORT):
        super().__init__(tokenizer)
        if effort is not None and not (isinstance(effort, int | float) and math.isfinite(effort) and 0 <= effort < 1):
            raise ConfigurationError(f"TmlV0Renderer: effort must be a finite number in [0, 1) or None, got {effort!r}")
        self.effort = effort
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.stop_id = self.w.ids[_STOP]
        #: the id at an image's positions in token lists (the format has no pad token; the ModelInput holds an
        #: ImageChunk there)
        self.image_pad = self.w.ids[_IMAGE]
        self._leading = 0  # how many leading system messages the conversation being rendered has

    def _contexts(self, messages: Sequence[Message], turn_start: int, for_prompt: bool = False) -> list[RenderContext]:
        n = 0
        while n < len(messages) and messages[n]["role"] in _SYSTEMS:
            n += 1
        self._leading = n
        return super()._contexts(messages, turn_start, for_prompt)

    def _effort_block(self) -> list[Piece]:
        if self.effort is None:
            return []
        return [_MSG["system"], _TEXT, Lit(f"Thinking effort level: {round(self.effort * 1000) / 1000:g}"), _END]

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        header: list[Piece] = self._effort_block() if ctx.idx == self._leading else []
        if role == "tool_declare":
            return RenderedMessage(header=self.w(*header, _MSG["system"], "tool_declare", _XML),
                                   output=self.w(Lit(text_of(msg["content"])), _END))
        if role == "assistant":
            return RenderedMessage(header=self.w(*header), output=self._assistant(msg, ctx))
        if role not in _MSG:
            raise ConfigurationError(f"tml_v0 has no role {role!r} (system, user, assistant, tool, tool_declare)")
        opening: list[Piece] = [_MSG["tool"], Lit(str(msg.get("name") or ""))] if role == "tool" else [_MSG[role]]
        content = msg["content"]
        blocks = self._blocks(list(content), opening, ctx) if isinstance(content, list) else []
        if not blocks:
            return RenderedMessage(header=self.w(*header, *opening, _TEXT), output=self.w(Lit(text_of(content)), _END))
        # a list of parts: a message per text or image part, as tml writes a multi-part message
        first_head, first_body = blocks[0]
        output = list(first_body)
        for head, body in blocks[1:]:
            output += head + body
        return RenderedMessage(header=self.w(*header) + first_head, output=output)

    def _blocks(self, parts: list[Any], opening: list[Piece], ctx: RenderContext) -> list[tuple[list[Segment], list[Segment]]]:
        """``(head, body)`` per message: ``{opening}<|content_image|>[image]<|end_message|>`` per image part and
        ``{opening}<|content_text|>{text}<|end_message|>`` per text part (thinking parts are not content)."""
        out: list[tuple[list[Segment], list[Segment]]] = []
        for j, p in enumerate(parts):
            if p["type"] == "text":
                out.append((self.w(*opening, _TEXT), self.w(Lit(str(p["text"])), _END)))
            elif p["type"] == "image":
                seg = image_segment(p["image"], INKLING, self.image_pad, f"message {ctx.idx} part {j}")
                out.append((self.w(*opening, _IMAGE), [seg, *self.w(_END)]))
        return out

    def _assistant(self, msg: Message, ctx: RenderContext) -> list[Segment]:
        content = msg["content"]
        if has_images(content):
            return self._assistant_with_images(msg, ctx)
        return self.w(*self._assistant_pieces(msg))

    def _assistant_with_images(self, msg: Message, ctx: RenderContext) -> list[Segment]:
        """Thinking, text and image parts in order, a ``<|message_model|>`` message each (an image:
        ``<|content_image|>[image]``), then the tool calls and the stop token."""
        out: list[Segment] = []
        run: list[Any] = []  # text and image parts since the last thinking part

        def flush() -> None:
            for head, body in self._blocks(run, [_MSG["assistant"]], ctx):
                out.extend(head + body)
            run.clear()

        parts: list[Any] = list(msg["content"])
        for p in parts:
            if p["type"] == "thinking":
                flush()
                out += self.w(_MSG["assistant"], _THINK, Lit(p["thinking"]), _END)
            else:
                run.append(p)
        flush()
        calls_only: Message = {"role": "assistant", "content": [], "tool_calls": msg.get("tool_calls") or []}
        return out + self.w(*self._assistant_pieces(calls_only, write_empty=False))

    def _assistant_pieces(self, msg: Message, write_empty: bool = True) -> list[Piece]:
        content = msg["content"]
        parts: list[ContentPart] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        calls = msg.get("tool_calls") or []
        out: list[Piece] = []
        for p in parts:
            if p["type"] == "thinking":
                out += [_MSG["assistant"], _THINK, Lit(p["thinking"]), _END]  # type: ignore[typeddict-item]
            elif p["type"] == "text" and (p["text"] or not calls):  # type: ignore[typeddict-item]
                out += [_MSG["assistant"], _TEXT, Lit(p["text"]), _END]  # type: ignore[typeddict-item]
        if not out and not calls and write_empty:
            out += [_MSG["assistant"], _TEXT, _END]
        for c in calls:
            args = c.arguments_dict()
            if not isinstance(args, dict):
                raise RendererError(f"tml_v0: tool call {c.name!r} arguments must be a JSON object, got {c.arguments!r}")
            body = '{"name":' + _compact(c.name) + ',"args":' + _compact(args, sort=True) + "}"  # tml sorts arguments
            out += [_MSG["assistant"], Lit(c.name), _CALL, Lit(body), _END]
        return [*out, _STOP]

    def generation_prompt_tokens(self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None,
                                 _memo: dict[str, list[int]] | None = None, _images: Any = None) -> list[int]:
        """As the base class, but a ``prefill`` is refused: the model writes its own ``<|message_model|>`` header,
        so a partial assistant message cannot be given as text (tinker-cookbook's tml_v0 refuses it too)."""
        if prefill is not None:
            raise RendererError("tml_v0 takes no prefill: the model writes its own message header; pass prefill=None")
        return super().generation_prompt_tokens(messages, role, None, _memo, _images)

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """Nothing (the model writes its own header), except the effort message when every message so far is a
        leading system message."""
        if role != "assistant":
            raise ConfigurationError("tml_v0 generation prompts are for the assistant only")
        return self.w(*self._effort_block()) if ctx.idx == self._leading else []

    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """``[system?, tool_declare]``: the tools as one compact JSON array of ``{"type": "function", ...}``
        (keys sorted, as tml-renderers writes them)."""
        out: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        if tools:
            specs: list[dict[str, Any]] = []
            for t in tools:
                inner: Any = t.get("function", t) if isinstance(t, Mapping) else t  # an OpenAI wrapper is unwrapped
                specs.append(dict(inner))
            decl = [{"type": "function", **s} for s in specs]
            out.append({"role": "tool_declare", "content": _compact(decl, sort=True)})
        return out

    def get_stop_sequences(self) -> list[int]:
        return [self.stop_id]

    _FRAME = re.compile(r"<\|message_model\|>(.*?)(<\|content_text\|>|<\|content_thinking\|>|<\|content_invoke_tool_json\|>)(.*?)<\|end_message\|>", re.S)

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text -> assistant message: thinking and text messages become parts, tool-call messages
        tool calls (an unreadable one an :class:`UnparsedToolCall`)."""
        parts: list[ContentPart] = []
        calls: list[ToolCall] = []
        unparsed: list[UnparsedToolCall] = []
        pos = 0
        for m in self._FRAME.finditer(text):
            if text[pos : m.start()].strip():
                unparsed.append(UnparsedToolCall(raw_text=text[pos : m.start()], error="text outside a message frame"))
            pos = m.end()
            name, kind, body = m.groups()
            if kind == _THINK:
                parts.append({"type": "thinking", "thinking": body})
            elif kind == _TEXT:
                parts.append({"type": "text", "text": body})
            else:
                try:
                    obj = json.loads(body)
                    args = obj["args"]
                    if not isinstance(args, dict) or obj.get("name", name) != name:
                        raise ValueError("args must be an object and the name must match the header")
                    calls.append(ToolCall(name=name, arguments=json.dumps(args, ensure_ascii=False)))
                except (ValueError, KeyError, TypeError) as exc:
                    unparsed.append(UnparsedToolCall(raw_text=m.group(0), error=f"bad tool call JSON: {exc}"))
        if text[pos:].strip():
            unparsed.append(UnparsedToolCall(raw_text=text[pos:], error="unterminated message frame"))
        body = "".join(p["text"] for p in parts if p["type"] == "text")  # type: ignore[typeddict-item]
        return assistant_message(parts, body, calls, unparsed)

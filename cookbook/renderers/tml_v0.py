"""TMLv0 renderer (``tml_v0``): Thinking Machines' Inkling models (Inkling, Inkling-Small), o200k-based chat tokens.

Oracle: tml-renderers' ``tml_renderers.v0.Renderer`` with its ``O200kBaseChatTokenizer`` (no chat template exists
for this format); the Inkling tokenizer folder is exported from that tokenizer. Every message is framed on its own::

    <|message_{system|user}|><|content_text|>{text}<|end_message|>
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
    text_of,
)
from cookbook.renderers.kit.parsing import assistant_message
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter

_MSG = {"system": "<|message_system|>", "user": "<|message_user|>", "assistant": "<|message_model|>", "tool": "<|message_tool|>"}
_TEXT, _THINK, _CALL, _XML = "<|content_text|>", "<|content_thinking|>", "<|content_invoke_tool_json|>", "<|content_xml|>"
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
    has_extension_property = True

    CONTROL_TOKENS = (*_MSG.values(), _TEXT, _THINK, _CALL, _XML, _END, _STOP)

    def __init__(self, tokenizer: Any, effort: float | None = DEFAULT_EFFORT):
        super().__init__(tokenizer)
        if effort is not None and not (isinstance(effort, int | float) and math.isfinite(effort) and 0 <= effort < 1):
            raise ConfigurationError(f"TmlV0Renderer: effort must be a finite number in [0, 1) or None, got {effort!r}")
        self.effort = effort
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.stop_id = self.w.ids[_STOP]
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
            return RenderedMessage(header=self.w(*header), output=self.w(*self._assistant(msg)))
        if role not in _MSG:
            raise ConfigurationError(f"tml_v0 has no role {role!r} (system, user, assistant, tool, tool_declare)")
        if role == "tool":
            head = [_MSG["tool"], Lit(str(msg.get("name") or "")), _TEXT]
        else:
            head = [_MSG[role], _TEXT]
        return RenderedMessage(header=self.w(*header, *head), output=self.w(Lit(text_of(msg["content"])), _END))

    def _assistant(self, msg: Message) -> list[Piece]:
        content = msg["content"]
        parts: list[ContentPart] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        calls = msg.get("tool_calls") or []
        out: list[Piece] = []
        for p in parts:
            if p["type"] == "thinking":
                out += [_MSG["assistant"], _THINK, Lit(p["thinking"]), _END]  # type: ignore[typeddict-item]
            elif p["type"] == "text" and (p["text"] or not calls):  # type: ignore[typeddict-item]
                out += [_MSG["assistant"], _TEXT, Lit(p["text"]), _END]  # type: ignore[typeddict-item]
        if not out and not calls:
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

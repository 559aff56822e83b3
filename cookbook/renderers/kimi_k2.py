"""Kimi K2 renderers: ``kimi_k2`` (Kimi-K2-Instruct, no reasoning), ``kimi_k2_thinking`` (Kimi-K2-Thinking) and the
Kimi K2.5 / K2.6 format (``kimi_k25``, ``kimi_k26`` and their variants, option ``k25``; see the end of this text).

Oracles: llama.cpp's copies of the Kimi-K2-Instruct and Kimi-K2-Thinking chat templates (``Kimi-K2-Instruct.jinja``,
``Kimi-K2-Thinking.jinja``) with the Kimi K2 tokenizers exported from tml-renderers. The Instruct tokenizer has no
``<think>`` token, so ``kimi_k2`` uses ``moonshotai/Kimi-K2-Instruct`` and ``kimi_k2_thinking`` uses
``moonshotai/Kimi-K2-Thinking`` (which adds ``<think>``=163606 and ``</think>``=163607). tinker-cookbook's
``kimi_k2`` renderer is the Thinking format: it corresponds to ``kimi_k2_thinking`` here.

Token format (every marker below is one special token; content is encoded literally, see the spec's
``literal-special-text``)::

    <|im_system|>system<|im_middle|>{system}<|im_end|><|im_user|>user<|im_middle|>{text}<|im_end|>
    <|im_assistant|>assistant<|im_middle|>{answer}<|im_end|>

* **Headers** are ``<|im_user|>{name}<|im_middle|>``, ``<|im_assistant|>{name}<|im_middle|>`` and, for every other
  role, ``<|im_system|>{name}<|im_middle|>``, where ``{name}`` is the message's ``name`` or else its role (the
  template's ``message.get('name') or message['role']``). There is no text between messages: each message ends
  with ``<|im_end|>``, which is part of its (trained) output.
* **Default system prompt.** When the first message (after a leading ``tool_declare``) is not a system message,
  ``<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>`` precedes it,
  as part of that message's (untrained) header. The Instruct template follows it with ``\\n``; the Thinking
  template does not.
* **Content** is written verbatim (nothing is trimmed).
* **Tool declarations** (:meth:`create_conversation_prefix_with_tools`) are a ``tool_declare`` message:
  ``<|im_system|>tool_declare<|im_middle|>{json}<|im_end|>``, where ``{json}`` is the list of
  ``{"type": "function", "function": spec}`` with every object's keys sorted recursively (the Kimi tokenizer's own
  ``apply_chat_template`` deep-sorts ``tools`` before its template runs) and written with ``json.dumps`` defaults
  (``", "`` / ``": "`` separators, non-ASCII kept), as the template's ``tojson`` does. The system prompt is a
  separate message after it. (tinker-cookbook writes compact separators instead.)
* **Tool calls** follow the text::

      <|tool_calls_section_begin|><|tool_call_begin|>{id}<|tool_call_argument_begin|>{arguments}<|tool_call_end|>...
      <|tool_calls_section_end|>

  ``{id}`` is the call's ``id`` when it is of the native form ``functions.NAME:IDX`` (a sampled id), else
  ``functions.{name}:{k}`` with ``k`` counting every call of the conversation from 0, which is what the template
  always writes (a tool message's ``tool_call_id`` naming such a call gets the same id).
  ``{arguments}`` is ``ToolCall.arguments`` exactly as given (the template writes a string argument verbatim).
* **Tool responses** are one message each: ``<|im_system|>{name or "tool"}<|im_middle|>## Return of {id}\\n{content}
  <|im_end|>``; ``{id}`` is the message's ``tool_call_id`` or else, like the template, the next unanswered call id.

``kimi_k2_thinking`` writes every assistant message as ``<think>{reasoning}</think>{text}...``. The generation
prompt ends ``<|im_assistant|>assistant<|im_middle|>`` (nothing is pre-filled), so the whole think block is sampled
and trained. Reasoning is kept for the assistant messages after the last assistant message without tool calls
(the *current turn*: its tool-calling steps) and replaced by the empty ``<think></think>`` before it; in a
supervised example the current turn is computed without the final message, so the message being produced and the
tool-calling steps before it keep their reasoning. The authentic template computes it over the whole conversation,
so a final answer falls into its own history and loses the reasoning it was sampled with: named deviation
``keep-reasoning-in-produced-turn`` (tinker-cookbook issue #340 / PR #341 discuss the same rule). llama.cpp's
copy of the template finds the *first* such message (its loop lacks the original's ``break``); the renderer follows
the original: named deviation ``llamacpp-first-answer``. The reasoning turn only decides what is rendered;
``TrainOnWhat.LAST_ASSISTANT_TURN`` keeps the project-wide meaning (every assistant message after the last user
message), where tinker-cookbook's Kimi renderer reuses its reasoning turn.

**Kimi K2.5 / K2.6** (``k25=True``; oracle tml-renderers' ``KimiK25``, no chat template reaches a registry): the
Thinking format with the opening ``<think>`` moved into the assistant header, so the generation prompt ends
``<|im_assistant|>assistant<|im_middle|><think>`` and a message's trained output is ``{reasoning}</think>{text}
[calls]<|im_end|>`` (a sampled response starts inside the block; one that never closes it is all reasoning); no
default system prompt; the ``tool_declare`` JSON deep-sorted with compact separators; image parts of user, system,
tool and assistant messages as ``<|media_begin|>image<|media_content|>[ImageChunk]<|media_end|>`` in place, as
tml-renderers' KimiK25 writes them in every role (``expected_tokens`` from MoonViT's
resize, :data:`cookbook.renderers.kit.vision.MOONVIT`). ``enable_thinking=False`` (``*_disable_thinking``) puts the
closed ``<think></think>`` in the header, renders no reasoning at all and refuses a trained message that reasons;
``preserve_thinking=True`` (``kimi_k26_preserve_thinking``, K2.6's ``preserve_thinking``) keeps every message's
reasoning. Both variants have the sequence-extension property.

Stop sequence ``<|im_end|>``; ``[EOS]`` at the end of a response is an EOS termination. ``kimi_k2`` has the
sequence-extension property (each message renders the same wherever it is); ``kimi_k2_thinking`` does not
(reasoning of a finished turn is dropped from later prompts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

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
    thinking_of,
)
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter
from cookbook.renderers.kit.vision import MOONVIT, content_runs

KIMI_DEFAULT_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."


def deep_sort(obj: Any) -> Any:
    """Every mapping's keys sorted, recursively (lists keep their order): the Kimi tokenizer's ``deep_sort_dict``."""
    if isinstance(obj, Mapping):
        return {k: deep_sort(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [deep_sort(v) for v in obj]
    return obj


def kimi_tools_json(tools: Sequence[Mapping[str, Any]], compact: bool = False) -> str:
    """The ``tool_declare`` payload: ``[{"type": "function", "function": spec}, ...]`` deep-sorted, ``json.dumps``
    with default separators (``compact``: ``","`` / ``":"``, K2.5) and non-ASCII kept. Tools already wrapped as
    ``{"type": "function", ...}`` are kept."""
    wrapped = [dict(t) if t.get("type") == "function" else {"type": "function", "function": dict(t)} for t in tools]
    return json.dumps(deep_sort(wrapped), ensure_ascii=False, separators=(",", ":") if compact else None)


_SECTION = re.compile(r"<\|tool_calls?_section_begin\|>(.*?)(?:<\|tool_calls?_section_end\|>|\Z)", re.DOTALL)
_CALL = re.compile(r"<\|tool_call_begin\|>(.*?)<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>", re.DOTALL)
_CALL_ID = re.compile(r"^\s*(?:functions\.)?([^\s<:]+(?:[^\s<]*?)):(\d+)\s*$")


def call_id_for(call: ToolCall, index: int) -> str:
    """The id written for a call: its own id when that is ``functions.NAME:IDX`` for its name (a sampled id, kept
    so that re-rendering reproduces the sampled tokens: deviation ``given-tool-call-ids``), else the template's
    counted ``functions.{name}:{index}`` (``index`` counts the calls of the conversation). The id is the only place
    the format names the function: an id such as ``call_1`` written verbatim could not be parsed back."""
    if call.id:
        m = _CALL_ID.match(call.id)
        if m is not None and m.group(1) == call.name:
            return call.id
    return f"functions.{call.name}:{index}"


def parse_kimi_tool_section(section: str) -> tuple[list[ToolCall], list[UnparsedToolCall]]:
    """The inside of ``<|tool_calls_section_begin|>...<|tool_calls_section_end|>`` -> tool calls.

    Each call is ``<|tool_call_begin|>{id}<|tool_call_argument_begin|>{json}<|tool_call_end|>``; the id must be
    ``[functions.]NAME:IDX`` (the name is the id without those) and the arguments a JSON object, else the call is an
    :class:`UnparsedToolCall` with its raw text. Text that is not a call makes an unparsed call too.
    """
    calls: list[ToolCall] = []
    unparsed: list[UnparsedToolCall] = []
    pos = 0
    for m in _CALL.finditer(section):
        stray = section[pos : m.start()]
        if stray.strip():
            unparsed.append(UnparsedToolCall(raw_text=stray, error="text in the tool-call section that is not a call"))
        pos = m.end()
        raw, call_id, args = m.group(0), m.group(1).strip(), m.group(2)
        idm = _CALL_ID.match(call_id)
        if idm is None:
            unparsed.append(UnparsedToolCall(raw_text=raw, error=f"tool call id {call_id!r} is not functions.NAME:IDX"))
            continue
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError as exc:
            unparsed.append(UnparsedToolCall(raw_text=raw, error=f"Invalid JSON: {exc}"))
            continue
        if not isinstance(parsed, dict):
            unparsed.append(UnparsedToolCall(raw_text=raw, error="tool-call arguments are not a JSON object"))
            continue
        calls.append(ToolCall(name=idm.group(1), arguments=args, id=call_id))
    rest = section[pos:]
    if rest.strip():
        unparsed.append(UnparsedToolCall(raw_text=rest, error="unterminated or malformed tool call"))
    return calls, unparsed


class KimiK2Renderer(Renderer):
    """Kimi K2 Instruct: no think blocks; tools; the sequence-extension property."""

    name = "kimi_k2"
    supports_tools = True

    CONTROL_TOKENS: tuple[str, ...] = (
        "<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>", "<|im_end|>",
        "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>", "<|tool_call_end|>",
    )
    MEDIA_TOKENS: tuple[str, ...] = ("<|media_begin|>", "<|media_content|>", "<|media_end|>")

    def __init__(
        self,
        tokenizer: Any,
        thinking: bool = False,
        k25: bool = False,
        enable_thinking: bool = True,
        preserve_thinking: bool = False,
    ):
        """``thinking=True`` (``kimi_k2_thinking``): ``<think>{reasoning}</think>`` in every assistant message,
        reasoning kept for the current turn only (see the module docs), no default-system newline, no extension
        property.

        ``k25=True`` (``kimi_k25``, ``kimi_k26`` and their variants): the Kimi K2.5 / K2.6 format (think blocks
        whose opening ``<think>`` belongs to the assistant header, no default system prompt, compact tool JSON,
        image parts); ``enable_thinking=False``: the header carries the closed ``<think></think>`` and no reasoning
        is rendered; ``preserve_thinking=True``: every assistant message keeps its reasoning (K2.6's
        ``preserve_thinking``)."""
        if not k25 and (not enable_thinking or preserve_thinking):
            raise ValueError("enable_thinking=False and preserve_thinking=True are options of the Kimi K2.5 format (k25=True)")
        super().__init__(tokenizer)
        thinking = thinking or k25
        self.k25 = k25
        #: assistant messages carry a <think>...</think> block
        self.think_blocks = self.supports_thinking = thinking
        #: reasoning is written at all (False: K2.5's disable-thinking mode, every block is <think></think>)
        self.renders_reasoning = thinking and enable_thinking
        self.preserve_thinking = preserve_thinking
        self.disables_thinking = k25 and not enable_thinking
        self.disabled_thinking_prefill = "<think></think>"
        self.has_extension_property = not thinking or self.disables_thinking or preserve_thinking
        #: the Instruct template writes "\n" after the default system message
        self.default_system_suffix = "" if thinking else "\n"
        #: K2 writes a default system prompt before a conversation without one; K2.5 does not
        self.default_system = not k25
        #: what the assistant header ends with (K2.5: the generation prompt opens, or closes, the think block)
        self.think_opening = ("<think>" if enable_thinking else "<think></think>") if k25 else ""
        self.supports_images = k25
        self.w = SegmentWriter(self.enc, (*self.CONTROL_TOKENS, *(("<think>", "</think>") if thinking else ()),
                                          *(self.MEDIA_TOKENS if k25 else ())))
        self.im_end = self.w.ids["<|im_end|>"]
        self.eos_token_id = self.eos = self.enc.special("[EOS]")
        self.media_pad = self.enc.special("<|media_pad|>") if k25 else None

    @property
    def thinking_renderer(self) -> str:  # type: ignore[override]
        """The thinking renderer to use instead of a disable-thinking one (named in its refusal)."""
        return self.name.replace("_disable_thinking", "")

    # ------------------------------------------------------------------------------------------ rendering
    def _opening(self, role: str, name: str, ctx: RenderContext) -> list[Piece]:
        """``[default system] <|im_X|>{name}<|im_middle|>``: the default system block precedes the first message that
        is neither ``system`` nor ``tool_declare`` when it is the first (after a leading ``tool_declare``)."""
        pieces: list[Piece] = []
        first = ctx.idx == 0 or (ctx.idx == 1 and ctx.prev is not None and ctx.prev["role"] == "tool_declare")
        if first and self.default_system and role not in ("system", "tool_declare"):
            pieces += ["<|im_system|>system<|im_middle|>", Lit(KIMI_DEFAULT_SYSTEM), "<|im_end|>" + self.default_system_suffix]
        opener = {"user": "<|im_user|>", "assistant": "<|im_assistant|>"}.get(role, "<|im_system|>")
        pieces += [opener, Lit(name), "<|im_middle|>"]
        if role == "assistant" and self.think_opening:
            pieces.append(self.think_opening)
        return pieces

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        name = str(msg.get("name") or role)
        header = self.w(*self._opening(role, name, ctx))
        if role == "assistant":
            return RenderedMessage(header=header, output=self._assistant_output(msg, ctx))
        prefix: list[Piece] = []
        if role == "tool":
            prefix = ["## Return of ", Lit(self._response_id(msg, ctx)), "\n"]
        if has_images(msg["content"]):
            output = self.w(*prefix) + self._vision_content(msg, ctx) + self.w("<|im_end|>")
        else:
            output = self.w(*prefix, Lit(text_of(msg["content"])), "<|im_end|>")
        return RenderedMessage(header=header, output=output)

    def _vision_content(self, msg: Message, ctx: RenderContext) -> list[Segment]:
        """K2.5: text and image parts in order, each image ``<|media_begin|>image<|media_content|>[image]
        <|media_end|>`` (tml-renderers' KimiK25; tinker-cookbook adds a newline after ``<|media_end|>``)."""
        assert self.media_pad is not None  # check_messages refuses images unless supports_images (K2.5)
        out: list[Segment] = []
        for run in content_runs(list(msg["content"]), MOONVIT, self.media_pad, ctx.idx):
            if isinstance(run, str):
                out += self.w(Lit(run))
            else:
                out += [*self.w("<|media_begin|>image<|media_content|>"), run, *self.w("<|media_end|>")]
        return out

    def _assistant_output(self, msg: Message, ctx: RenderContext) -> list[Segment]:
        """Reasoning, text (with images in place, as tml-renderers' KimiK25 writes an image part of an assistant
        message: the same media block as in a user message; never trained), tool calls, ``<|im_end|>``."""
        content = msg["content"]
        if not has_images(content):
            return self.w(*self._assistant_body(msg, ctx), "<|im_end|>")
        head, tail = self._assistant_body(msg, ctx, split=True)
        return self.w(*head) + self._vision_content(msg, ctx) + self.w(*tail, "<|im_end|>")

    def _assistant_body(self, msg: Message, ctx: RenderContext, split: bool = False) -> Any:
        """The assistant pieces; ``split=True``: ``(pieces before the content, pieces after it)`` without the text."""
        body: list[Piece] = []
        content = msg["content"]
        if self.renders_reasoning:
            keep = self.preserve_thinking or ctx.idx >= _conversation().reasoning_start
            reasoning = "\n".join(thinking_of(content)) if keep else ""
            # K2.5: the header already opened the block (the generation prompt ends with <think>)
            body += ([] if self.k25 else ["<think>"]) + [Lit(reasoning), "</think>"]
        head = body
        if split:
            body = []
        else:
            body.append(Lit(text_of(content)))
        calls = msg.get("tool_calls") or []
        if calls:
            body.append("<|tool_calls_section_begin|>")
            first = _calls_before(ctx)
            for k, call in enumerate(calls):
                call_id = call_id_for(call, first + k)
                body += ["<|tool_call_begin|>", Lit(call_id), "<|tool_call_argument_begin|>", Lit(call.arguments),
                         "<|tool_call_end|>"]
            body.append("<|tool_calls_section_end|>")
        return (head, body) if split else body

    def _response_id(self, msg: Message, ctx: RenderContext) -> str:
        conv = _conversation()
        given = msg.get("tool_call_id")
        if given:
            return conv.written_ids.get(str(given), str(given))
        return conv.response_ids.get(ctx.idx) or f"functions.{msg.get('name') or 'unknown'}:{_calls_before(ctx)}"

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``<|im_assistant|>assistant<|im_middle|>`` (after the default system block when nothing precedes it)."""
        return self.w(*self._opening(role, role, ctx))

    def _contexts(
        self, messages: Sequence[Message], turn_start: int, for_prompt: bool = False
    ) -> list[RenderContext]:
        _CONVERSATION.set(_Conversation.of(messages, for_prompt))
        return super()._contexts(messages, turn_start, for_prompt)

    def check_messages(self, messages: Sequence[Message]) -> None:
        super().check_messages(messages)
        for m in messages:
            for call in m.get("tool_calls") or []:
                call.arguments_dict()  # arguments must be JSON (they are written verbatim)

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """``[tool_declare message, system message]``: the declaration (see the module docs), then the system prompt
        when one is given (without one, the default Kimi system prompt follows the declaration when rendered)."""
        system_prompt = system_prompt or None  # "" is no system prompt (tinker-cookbook passes "" by default)
        out: list[Message] = []
        if tools:
            out.append({"role": "tool_declare", "content": kimi_tools_json(list(tools), compact=self.k25)})
        if system_prompt is not None:
            out.append({"role": "system", "content": system_prompt})
        return out

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text (after ``<|im_assistant|>assistant<|im_middle|>``; stop ``<|im_end|>``, ``[EOS]`` an
        EOS) -> assistant message: ``<think>...</think>`` (Thinking only) becomes a thinking part (an empty one is
        dropped), the tool-call section becomes tool calls (unparseable calls become ``unparsed_tool_calls``); text
        is kept verbatim."""
        calls: list[ToolCall] = []
        unparsed: list[UnparsedToolCall] = []
        sec = _SECTION.search(text)
        if sec is not None:
            calls, unparsed = parse_kimi_tool_section(sec.group(1))
            if not sec.group(0).rstrip().endswith(("<|tool_calls_section_end|>", "<|tool_call_section_end|>")):
                unparsed.append(UnparsedToolCall(raw_text=sec.group(0), error="unterminated tool-call section"))
                calls = []
            text = text[: sec.start()] + text[sec.end() :]
        parts: list[ContentPart] = []
        if self.renders_reasoning and self.k25:
            # the generation prompt opened the block: the response is "{reasoning}</think>{text}"; a response that
            # never closes it is all reasoning (as tml-renderers' KimiK25 parser reads it)
            reasoning, closed, rest = text.removeprefix("<think>").partition("</think>")
            text = rest if closed else ""
            if reasoning:
                parts.append({"type": "thinking", "thinking": reasoning})
        elif self.think_blocks and not self.k25 and text.startswith("<think>") and "</think>" in text:
            reasoning, _, text = text[len("<think>") :].partition("</think>")
            if reasoning:
                parts.append({"type": "thinking", "thinking": reasoning})
        msg: Message
        if parts:
            if text:
                parts.append({"type": "text", "text": text})
            msg = {"role": "assistant", "content": parts}
        else:
            msg = {"role": "assistant", "content": text}
        if calls:
            msg["tool_calls"] = calls
        if unparsed:
            msg["unparsed_tool_calls"] = unparsed
        return msg


# ----------------------------------------------------------------------------------------------- conversation state


class _Conversation:
    """Per-conversation facts a message cannot see from its :class:`RenderContext`: how many tool calls precede
    each message (for counted call ids), which call id each tool response answers (the template's queue) and where
    the current reasoning turn starts: just after the last assistant message without tool calls, searched in all
    messages of a generation prompt and in all but the last message of a supervised example."""

    def __init__(
        self,
        calls_before: list[int],
        response_ids: dict[int, str],
        reasoning_start: int = 0,
        written_ids: dict[str, str] | None = None,
    ):
        self.calls_before = calls_before
        self.response_ids = response_ids
        self.reasoning_start = reasoning_start
        #: a call's own id -> the id written for it (see :func:`call_id_for`), for tool responses that name it
        self.written_ids = written_ids or {}

    @classmethod
    def of(cls, messages: Sequence[Message], in_prompt: bool = True) -> _Conversation:
        calls_before: list[int] = []
        response_ids: dict[int, str] = {}
        queue: list[str] = []
        written: dict[str, str] = {}
        count = 0
        for i, m in enumerate(messages):
            calls_before.append(count)
            for call in m.get("tool_calls") or []:
                queue.append(call_id_for(call, count))
                if call.id:
                    written[call.id] = queue[-1]
                count += 1
            if m["role"] == "tool" and queue:
                response_ids[i] = queue.pop(0)
        calls_before.append(count)
        scope = messages if in_prompt else messages[:-1]
        start = 0
        for i in range(len(scope) - 1, -1, -1):
            if scope[i]["role"] == "assistant" and not scope[i].get("tool_calls"):
                start = i + 1
                break
        return cls(calls_before, response_ids, start, written)


#: True while a generation prompt is rendered (the reasoning turn is then searched in all of its messages)
_CONVERSATION: ContextVar[_Conversation | None] = ContextVar("cookbook_kimi_k2_conversation", default=None)


def _conversation() -> _Conversation:
    conv = _CONVERSATION.get()
    return conv if conv is not None else _Conversation([0], {})


def _calls_before(ctx: RenderContext) -> int:
    before = _conversation().calls_before
    return before[ctx.idx] if ctx.idx < len(before) else before[-1]

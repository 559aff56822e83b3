"""Qwen3 text renderers: ``qwen3`` (thinking), ``qwen3_disable_thinking`` and ``qwen3_instruct`` (2507).

Token format (ChatML), one block per message::

    <|im_start|>{role}\\n{content}<|im_end|>\\n<|im_start|>{role}\\n...

* ``<|im_start|>`` and ``<|im_end|>`` are control tokens; ``<think>``, ``</think>``, ``<tool_call>``,
  ``</tool_call>``, ``<tool_response>`` and ``</tool_response>`` are ordinary added tokens of the vocabulary.
* The header of message ``i > 0`` is ``\\n<|im_start|>{role}\\n``: the ``\\n`` that follows the previous
  ``<|im_end|>`` opens the *next* header, so it is never trained and a supervised example ends exactly at
  the ``<|im_end|>`` the model samples as its stop token.
* The output is ``{text}<|im_end|>``. Content text is encoded literally (special-token parsing off), so a
  message that contains the text ``<|im_end|>`` cannot end its turn (named deviation
  ``literal-special-text`` in the specs).

Thinking (``qwen3``). The assistant message being produced -- the last message, when the conversation
has a user message -- is *framed* the way the template frames it::

    <think>\\n{reasoning.strip("\\n")}\\n</think>\\n\\n{text.lstrip("\\n")}

and a produced turn that did not reason still gets the empty block ``<think>\\n\\n</think>\\n\\n``, which
the thinking model samples itself and so is trained. With ``strip_thinking_from_history=True`` (the
default, as in tinker-cookbook) thinking parts are removed from *every* assistant message that is not the
last one. The template instead keeps the reasoning of assistant messages after the last user query (the
tool-calling steps of the current turn): named deviation ``strip-thinking-in-turn``. With
``strip_thinking_from_history=False`` every assistant message is framed alike and the renderer has the
sequence-extension property.

``qwen3_disable_thinking`` ends the generation prompt with ``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``
(the template with ``enable_thinking=False``). The empty block of a produced turn is placed in the
*header*, so it is never trained (the prompt supplies it, the model never samples it); a supervised turn
that reasoned raises :class:`~cookbook.errors.RendererError`.

``qwen3_vl`` (Qwen3-VL Thinking, option ``think_opening``) ends the generation prompt with
``<|im_start|>assistant\n<think>\n``: the opening of the produced turn's block is in its *header* (never
trained) and the model samples from inside the block; :meth:`Qwen3Renderer.parse_text` restores the opening.

``qwen3_instruct`` (Qwen3-*-Instruct-2507) never frames: no empty block, thinking parts (from another
model's conversation) are written ``<think>{t}</think>`` and stripped from history. It has the extension
property for conversations without thinking.

Tools. :meth:`Qwen3Renderer.create_conversation_prefix_with_tools` returns the system message that
declares the tools (``# Tools ... <tools>`` with one ``{"type": "function", "function": spec}`` JSON per
line). An assistant tool call is appended to the text as ``<tool_call>\\n{"name": ..., "arguments": {...}}
\\n</tool_call>`` (JSON with ``", "``/``": "`` separators, non-ASCII kept, like the template's ``tojson``),
preceded by ``\\n`` when the message has text, and joined with ``\\n``. A tool response is written in a
``user`` block as ``<tool_response>\\n{content}\\n</tool_response>``; consecutive tool responses share one
block, separated by ``\\n``, exactly as the template groups them (tinker-cookbook gives each its own block).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
    thinking_of,
)
from cookbook.renderers.kit.segments import tojson
from cookbook.renderers.kit.thinking import frame_thinking, restore_think_opening
from cookbook.renderers.kit.tools import parse_json_tool_call, tool_call_json, tool_run
from cookbook.renderers.kit.vision import QWEN3_VL, content_runs, image_segment

#: stands for an image part while an assistant message's text is built (a private-use character)
_IMAGE_MARK = "\ue000"

EMPTY_THINK = "<think>\n\n</think>\n\n"
THINK_OPENING = "<think>\n"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)

_BLOCK_RE = re.compile(r"<think>(.*?)</think>|<tool_call>(.*?)</tool_call>", re.DOTALL)


class Qwen3Renderer(Renderer):
    """Qwen3 hybrid models in thinking mode (``apply_chat_template`` with ``enable_thinking`` unset/True)."""

    name = "qwen3"
    supports_thinking = True
    supports_tools = True
    thinking_renderer = "qwen3"
    disabled_thinking_prefill = "its generation prompt pre-fills an empty <think></think> block"

    def __init__(
        self,
        tokenizer: Any,
        strip_thinking_from_history: bool = True,
        enable_thinking: bool = True,
        instruct: bool = False,
        vision: bool = False,
        think_opening: bool = False,
    ):
        """``enable_thinking=False``: ``qwen3_disable_thinking`` (the prompt pre-fills the empty block, which is the
        untrained header of a produced turn; a trained turn that reasons is refused). ``instruct=True``:
        ``qwen3_instruct`` (never frames a think block). ``vision=True``: Qwen3-VL Instruct
        (``qwen3_vl_instruct``): image parts of user, system, assistant and tool messages are written in place
        ``<|vision_start|>`` + image + ``<|vision_end|>`` (an ``ImageChunk`` of Qwen3-VL's token count), as
        tml-renderers' ``Qwen3.vision_instruct()`` writes them in every role; a tool message's parts share one
        ``<tool_response>`` (tml writes one per part)."""
        super().__init__(tokenizer)
        if think_opening and (instruct or not enable_thinking):
            raise ConfigurationError(
                "think_opening=True opens a think block in the generation prompt; it needs a thinking renderer "
                "(instruct=False, enable_thinking=True)"
            )
        #: ``think_opening=True`` (``qwen3_vl``, the Qwen3-VL Thinking format): the assistant generation prompt ends
        #: with ``<think>\n`` and a framed produced turn writes that opening in its untrained header, so the model
        #: is trained from inside the think block on (parse_text restores the opening)
        self.think_opening = THINK_OPENING if think_opening else ""
        self.supports_images = vision
        if vision:
            self.vision_start = self.enc.special("<|vision_start|>")
            self.vision_end = self.enc.special("<|vision_end|>")
            self.image_pad = self.enc.special("<|image_pad|>")
        self.strip_thinking_from_history = strip_thinking_from_history
        #: frame the produced turn with ``<think>\n...\n</think>\n\n`` (the 2507 Instruct models never do)
        self.frames_thinking = not instruct
        #: put the empty think block of a produced turn in the header (never trained): disable-thinking mode
        self.empty_block_in_header = self.disables_thinking = not enable_thinking
        self.has_extension_property = instruct or not strip_thinking_from_history
        self.im_start = self.enc.special("<|im_start|>")
        self.im_end = self.enc.special("<|im_end|>")
        self.eos_token_id = self.endoftext = self.enc.special("<|endoftext|>")

    # ------------------------------------------------------------------------------------------ rendering
    def frames(self, msg: Message, ctx: RenderContext) -> bool:
        """Whether ``msg`` is framed as a produced turn. The template frames only after the last user query
        (never in a conversation without a user message); with history stripped that is exactly the last
        message, and with history kept every assistant message is framed alike (extension property)."""
        if not self.frames_thinking or msg["role"] != "assistant" or ctx.last_user_index < 0:
            return False
        return ctx.is_last or not self.strip_thinking_from_history

    def _header(self, role: str, ctx: RenderContext, extra: str = "") -> list[Segment]:
        header: list[Segment] = ["\n"] if ctx.idx > 0 else []
        return [*header, [self.im_start], role + "\n" + extra]

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """The header of an empty message; in disable-thinking mode an assistant prompt ends with the empty block."""
        if self.empty_block_in_header:
            return self._header(role, ctx, EMPTY_THINK if role == "assistant" else "")
        if self.think_opening and role == "assistant":
            return self._header(role, ctx, self.think_opening)
        return super().generation_suffix(role, ctx)

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "assistant" and has_images(msg["content"]):
            return self._render_assistant_with_images(msg, ctx)
        if role == "tool":
            return self._render_tool_response(msg, ctx)
        if role != "assistant":
            return RenderedMessage(header=self._header(role, ctx), output=[*self._content(msg, ctx), [self.im_end]])
        text, raw_text, header_extra = self._assistant_text(msg, ctx)
        if self.think_opening and self.frames(msg, ctx) and text.startswith(self.think_opening):
            # the generation prompt wrote the opening: it moves to the header, never trained
            text, header_extra = text[len(self.think_opening) :], header_extra + self.think_opening
        calls = msg.get("tool_calls") or []
        if calls:
            text += ("\n" if raw_text else "") + "\n".join(
                "<tool_call>\n" + tool_call_json(c) + "\n</tool_call>" for c in calls
            )
        return RenderedMessage(
            header=self._header("assistant", ctx, header_extra), output=[text, [self.im_end]]
        )

    def _render_assistant_with_images(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        """An assistant message with image parts (vision): rendered as without them, each image written in place as
        ``<|vision_start|>`` + image + ``<|vision_end|>`` (tml-renderers' ``Qwen3.vision()`` writes an assistant's
        image parts so; they are never trained). Each image stands in the text as a placeholder character while
        the text is built, and the built text is cut there."""
        marks: list[Any] = []
        parts: list[ContentPart] = []
        content: list[Any] = list(msg["content"])
        for part in content:
            if part["type"] == "image":
                parts.append({"type": "text", "text": _IMAGE_MARK})
                marks.append(part["image"])
            else:
                parts.append(part)
        if any(_IMAGE_MARK in str(p.get("text", "")) + str(p.get("thinking", "")) for p in content):
            raise RendererError(f"message {ctx.idx}: text holds the reserved character U+E000; remove it")
        rendered = self.render_message({**msg, "content": parts}, ctx)  # type: ignore[typeddict-item]
        output: list[Segment] = []
        k = 0
        for seg in rendered.output:
            if not isinstance(seg, str) or _IMAGE_MARK not in seg:
                output.append(seg)
                continue
            pieces = seg.split(_IMAGE_MARK)
            for i, text in enumerate(pieces):
                if i:
                    image = image_segment(marks[k], QWEN3_VL, self.image_pad, f"message {ctx.idx} image {k}")
                    output += [[self.vision_start], image, [self.vision_end]]
                    k += 1
                if text:
                    output.append(text)
        if k != len(marks):
            raise RendererError(f"message {ctx.idx}: an image part was dropped with the reasoning it follows; "
                                "keep images out of thinking-only history turns")
        header = [s.replace(_IMAGE_MARK, "") if isinstance(s, str) else s for s in rendered.header]
        return RenderedMessage(header=header, output=output)

    def _assistant_text(self, msg: Message, ctx: RenderContext) -> tuple[str, str, str]:
        """(rendered text before the tool calls, the raw text that decides the ``\\n`` before the first call,
        text appended to the header)."""
        content = msg["content"]
        framed = self.frames(msg, ctx)
        if isinstance(content, str):
            if "</think>" in content:
                # inline reasoning is split the way the template splits it: the text is what follows the last
                # </think> (the reasoning, what precedes the first, is written only in a framed turn)
                rest = content.split("</think>")[-1].lstrip("\n")
                if not framed:
                    return rest, rest, ""
                return self._framed_result(content.split("</think>")[0].rstrip("\n").split("<think>")[-1], rest, rest)
            if not framed:
                return content, content, ""
            return self._framed_result("", content.lstrip("\n"), content)
        strip = self.strip_thinking_from_history and not ctx.is_last
        parts: list[ContentPart] = [p for p in content if not (strip and p["type"] == "thinking")]
        raw_text = text_of(parts)
        if not framed:
            out = "".join(
                f"<think>{p['thinking']}</think>" if p["type"] == "thinking" else p["text"]
                for p in parts
                if p["type"] != "image"
            )
            return out, raw_text, ""
        if not any(t.strip("\n") for t in thinking_of(parts)):
            return self._framed_result("", raw_text.lstrip("\n"), raw_text)
        pieces: list[str] = []
        after_block = False
        for p in parts:
            if p["type"] == "thinking":
                pieces.append(frame_thinking(p["thinking"]))
                after_block = True
            elif p["type"] == "text":
                pieces.append(p["text"].lstrip("\n") if after_block else p["text"])
                after_block = False
        return "".join(pieces), raw_text, ""

    def _framed_result(self, reasoning: str, rest: str, raw_text: str) -> tuple[str, str, str]:
        """A framed produced turn; in disable-thinking mode the *empty* block goes to the header."""
        if self.empty_block_in_header and not reasoning.strip("\n"):
            return rest, raw_text, EMPTY_THINK
        return frame_thinking(reasoning) + rest, raw_text, ""

    def _render_tool_response(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        """Consecutive tool responses share one ``<|im_start|>user`` block (as in the template); the ``\\n``
        between two responses ends the first one's output so that ``</tool_response>\\n`` tokenises as the
        template's single string does."""
        continues, followed = tool_run(ctx)
        header = [] if continues else self._header("user", ctx)
        if has_images(msg["content"]):  # vision: the images in place, inside the one tool response
            inner = self._content(msg, ctx)
            end = "\n</tool_response>" + ("\n" if followed else "")
            output: list[Segment] = ["<tool_response>\n", *inner, end] + ([] if followed else [[self.im_end]])
            return RenderedMessage(header=header, output=output)
        body = "<tool_response>\n" + text_of(msg["content"]) + "\n</tool_response>"
        output = [body + "\n"] if followed else [body, [self.im_end]]
        return RenderedMessage(header=header, output=output)

    def _content(self, msg: Message, ctx: RenderContext) -> list[Segment]:
        """A user or system message's content: its text verbatim; with images (vision), the parts in order, each
        image ``<|vision_start|>`` + image + ``<|vision_end|>`` (the template's ``<|image_pad|>``, expanded to the
        image processor's token count)."""
        content = msg["content"]
        if isinstance(content, str) or not has_images(content):
            return [text_of(content)]
        out: list[Segment] = []
        for run in content_runs(content, QWEN3_VL, self.image_pad, ctx.idx):
            out += [run] if isinstance(run, str) else [[self.vision_start], run, [self.vision_end]]
        return out

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message declaring ``tools`` (after ``system_prompt + "\\n\\n"`` when one is given).
        Each tool is one line of JSON, ``{"type": "function", "function": spec}``, as the template's ``tojson``
        writes it. With no tools this is just the system prompt (or nothing)."""
        system_prompt = system_prompt or None  # "" is no system prompt (tinker-cookbook passes "" by default)
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        lines = "".join("\n" + tojson({"type": "function", "function": dict(t)}) for t in tools)
        prefix = "" if system_prompt is None else system_prompt + "\n\n"
        return [{"role": "system", "content": prefix + TOOLS_PREAMBLE + lines + TOOLS_POSTAMBLE}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_text(self, text: str) -> Message:
        """Decoded assistant text (without the stop token) -> message; the inverse of rendering.

        (The base :meth:`~cookbook.renderers.base.Renderer.parse_response` decides the termination: one
        ``<|im_end|>`` at the end is ``STOP_SEQUENCE``, ``<|endoftext|>`` at the end instead ``EOS``, neither
        ``MALFORMED`` with the raw text.)

        * ``<think>...</think>`` -> :class:`ThinkingPart` (framing newlines removed, an empty block dropped);
          content is then a list of parts, otherwise a string. The prompt's ``<think>`` is restored first.
        * ``<tool_call>{json}</tool_call>`` -> :class:`ToolCall` (arguments re-serialised as a JSON string) in
          ``tool_calls``; a block that is not valid ``{"name": str, "arguments": object}`` JSON, or an
          unterminated ``<tool_call>``, -> :class:`UnparsedToolCall` in ``unparsed_tool_calls``.
        """
        text = restore_think_opening(text)
        items: list[tuple[str, str]] = []  # (kind, payload): text | think | call
        pos = 0
        for m in _BLOCK_RE.finditer(text):
            items.append(("text", text[pos : m.start()]))
            items.append(("think", m.group(1)) if m.group(1) is not None else ("call", m.group(2)))
            pos = m.end()
        items.append(("text", text[pos:]))

        parts: list[ContentPart] = []
        calls: list[ToolCall] = []
        unparsed: list[UnparsedToolCall] = []
        after_think = False
        for i, (kind, payload) in enumerate(items):
            if kind == "think":
                reasoning = payload.strip("\n") if self.frames_thinking else payload
                if reasoning:
                    parts.append({"type": "thinking", "thinking": reasoning})
                after_think = self.frames_thinking
            elif kind == "call":
                parsed = parse_json_tool_call(payload)
                (calls if isinstance(parsed, ToolCall) else unparsed).append(parsed)  # type: ignore[arg-type]
                after_think = False
            else:
                piece = payload.lstrip("\n") if after_think else payload
                if i + 1 < len(items) and items[i + 1][0] == "call" and piece.endswith("\n"):
                    piece = piece[:-1]  # the separator the renderer writes before a tool call
                if piece:
                    parts.append({"type": "text", "text": piece})
                after_think = False
        opened, closed = text.count("<tool_call>"), text.count("</tool_call>")
        if opened > closed:
            raw = text[text.rindex("<tool_call>") :]
            unparsed.append(
                UnparsedToolCall(raw_text=raw, error="unterminated <tool_call> block (no </tool_call>)")
            )

        msg: Message = {"role": "assistant", "content": parts if thinking_of(parts) else text_of(parts)}
        if calls:
            msg["tool_calls"] = calls
        if unparsed:
            msg["unparsed_tool_calls"] = unparsed
        return msg

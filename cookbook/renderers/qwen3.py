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

import json
import re
from collections.abc import Sequence
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import (
    ContentPart,
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolCall,
    ToolSpec,
    TrainOnWhat,
    UnparsedToolCall,
    last_user_index,
    text_of,
    thinking_of,
)

EMPTY_THINK = "<think>\n\n</think>\n\n"

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


def frame_thinking(reasoning: str) -> str:
    """The template's block around a produced turn: ``<think>\\n{reasoning}\\n</think>\\n\\n`` (padding is framing)."""
    return "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n"


def tool_call_json(call: ToolCall) -> str:
    """``{"name": ..., "arguments": {...}}`` as the template's ``tojson`` writes it (``json.dumps`` defaults,
    ``ensure_ascii=False``). The arguments string is parsed and re-serialised, so ``'{"x":1}'`` becomes
    ``{"x": 1}``."""
    return json.dumps({"name": call.name, "arguments": call.arguments_dict()}, ensure_ascii=False)


def has_reasoning(msg: Message) -> bool:
    """True when an assistant message carries non-empty reasoning (a thinking part, or inline ``<think>``)."""
    content = msg["content"]
    if isinstance(content, str):
        if "</think>" not in content:
            return False
        return bool(content.split("</think>")[0].split("<think>")[-1].strip())
    return any(t.strip() for t in thinking_of(content))


class Qwen3Renderer(Renderer):
    """Qwen3 hybrid models in thinking mode (``apply_chat_template`` with ``enable_thinking`` unset/True)."""

    name = "qwen3"
    supports_thinking = True
    supports_tools = True
    #: frame the produced turn with ``<think>\n...\n</think>\n\n`` (the 2507 Instruct models never do)
    frames_thinking: bool = True
    #: put the empty think block of a produced turn in the header (never trained): disable-thinking mode
    empty_block_in_header: bool = False

    def __init__(self, tokenizer: Any, strip_thinking_from_history: bool = True):
        super().__init__(tokenizer)
        self.strip_thinking_from_history = strip_thinking_from_history
        self.has_extension_property = not strip_thinking_from_history
        self.im_start = self.enc.special("<|im_start|>")
        self.im_end = self.enc.special("<|im_end|>")
        self.endoftext = self.enc.special("<|endoftext|>")

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

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "tool":
            return self._render_tool_response(msg, ctx)
        if role != "assistant":
            return RenderedMessage(
                header=self._header(role, ctx), output=[text_of(msg["content"]), [self.im_end]]
            )
        text, raw_text, header_extra = self._assistant_text(msg, ctx)
        calls = msg.get("tool_calls") or []
        if calls:
            text += ("\n" if raw_text else "") + "\n".join(
                "<tool_call>\n" + tool_call_json(c) + "\n</tool_call>" for c in calls
            )
        return RenderedMessage(
            header=self._header("assistant", ctx, header_extra), output=[text, [self.im_end]]
        )

    def _assistant_text(self, msg: Message, ctx: RenderContext) -> tuple[str, str, str]:
        """(rendered text before the tool calls, the raw text that decides the ``\\n`` before the first call,
        text appended to the header)."""
        content = msg["content"]
        framed = self.frames(msg, ctx)
        if isinstance(content, str):
            if not framed:
                return content, content, ""
            if "</think>" in content:
                # inline reasoning is normalised the way the template splits it
                before, _, after = content.partition("</think>")
                rest = after.lstrip("\n")
                return self._framed_result(before.rstrip("\n").split("<think>")[-1], rest, rest)
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
        continues = ctx.prev is not None and ctx.prev["role"] == "tool"
        followed = ctx.next is not None and ctx.next["role"] == "tool"
        body = "<tool_response>\n" + text_of(msg["content"]) + "\n</tool_response>"
        header = [] if continues else self._header("user", ctx)
        output: list[Segment] = [body + "\n"] if followed else [body, [self.im_end]]
        return RenderedMessage(header=header, output=output)

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message declaring ``tools`` (after ``system_prompt + "\\n\\n"`` when one is given).
        Each tool is one line of JSON, ``{"type": "function", "function": spec}``, as the template's ``tojson``
        writes it. With no tools this is just the system prompt (or nothing)."""
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        lines = "".join(
            "\n" + json.dumps({"type": "function", "function": dict(t)}, ensure_ascii=False) for t in tools
        )
        prefix = "" if system_prompt is None else system_prompt + "\n\n"
        return [{"role": "system", "content": prefix + TOOLS_PREAMBLE + lines + TOOLS_POSTAMBLE}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]:
        """Sampled tokens -> assistant message.

        * one ``<|im_end|>`` at the end: ``STOP_SEQUENCE``; ``<|endoftext|>`` at the end instead: ``EOS``;
          neither: ``MALFORMED`` with the raw decoded text as content (nothing parsed); a stop token that
          is not last, or two: :class:`RendererError`.
        * ``<think>...</think>`` -> :class:`ThinkingPart` (framing newlines removed, an empty block dropped);
          content is then a list of parts, otherwise a string.
        * ``<tool_call>{json}</tool_call>`` -> :class:`ToolCall` (arguments re-serialised as a JSON string) in
          ``tool_calls``; a block that is not valid ``{"name": str, "arguments": object}`` JSON, or an
          unterminated ``<tool_call>``, -> :class:`UnparsedToolCall` in ``unparsed_tool_calls``.
        """
        tokens = [int(t) for t in response]
        if tokens and tokens[-1] == self.endoftext and self.im_end not in tokens:
            body, term = tokens[:-1], ParseTermination.EOS
        else:
            body, term = self.split_on_stop_token(tokens, self.im_end)
        text = self.decode(body)
        if term is ParseTermination.MALFORMED:
            return {"role": "assistant", "content": text}, term
        return self.parse_text(text), term

    def parse_text(self, text: str) -> Message:
        """Decoded assistant text (without the stop token) -> message; the inverse of rendering."""
        head = text.split("</think>", 1)[0]
        if "</think>" in text and "<think>" not in head:
            text = "<think>" + text  # the generation prompt pre-filled <think>
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
                parsed = parse_tool_call(payload)
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


def parse_tool_call(payload: str) -> ToolCall | UnparsedToolCall:
    """The JSON inside ``<tool_call>...</tool_call>`` -> :class:`ToolCall`, or :class:`UnparsedToolCall`."""
    raw = "<tool_call>" + payload + "</tool_call>"
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as exc:
        return UnparsedToolCall(raw_text=raw, error=f"invalid JSON in <tool_call>: {exc}")
    if not isinstance(obj, dict):
        return UnparsedToolCall(raw_text=raw, error="<tool_call> is not a JSON object")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return UnparsedToolCall(raw_text=raw, error="<tool_call> has a missing or non-string 'name'")
    args = obj.get("arguments")
    if not isinstance(args, dict):
        return UnparsedToolCall(raw_text=raw, error="<tool_call> 'arguments' is missing or not a JSON object")
    call_id = obj.get("id")
    return ToolCall(
        name=name,
        arguments=json.dumps(args, ensure_ascii=False),
        id=call_id if isinstance(call_id, str) else None,
    )


class Qwen3DisableThinkingRenderer(Qwen3Renderer):
    """Qwen3 hybrid models with thinking disabled (the template with ``enable_thinking=False``).

    The generation prompt ends ``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``. A produced turn carries the
    same empty block in its header, so it is never trained. A supervised example whose trained assistant
    messages reasoned raises :class:`RendererError`.
    """

    name = "qwen3_disable_thinking"
    disables_thinking = True
    empty_block_in_header = True

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        return self._header(role, ctx, EMPTY_THINK if role == "assistant" else "")

    def _untrain_generation_prompt(
        self,
        messages: Sequence[Message],
        mode: TrainOnWhat,
        tokens: list[int],
        weights: list[float],
        memo: dict[str, list[int]] | None = None,
    ) -> list[float]:
        """Raise if a trained assistant message reasoned; otherwise zero what the generation prompt supplies.

        Unlike the base rule, a prompt that is not a token prefix (history rendered differently once a
        later message follows, e.g. two assistant messages in a row) is not an error: the empty block is in
        the header and untrained either way."""
        boundary = (
            len(messages) - 1 if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE else last_user_index(messages) + 1
        )
        for i in range(max(boundary, 0), len(messages)):
            if messages[i]["role"] == "assistant" and has_reasoning(messages[i]):
                raise RendererError(
                    f"renderer {self.name!r} disables thinking, but assistant message {i} reasons; its "
                    "generation prompt pre-fills an empty <think></think> block, so the model could never "
                    "have produced it. Use the 'qwen3' renderer or remove the reasoning."
                )
        if boundary >= len(messages) or messages[boundary]["role"] != "assistant":
            return weights
        prompt = self.generation_prompt_tokens(messages[:boundary], _memo=memo)
        if tokens[: len(prompt)] == prompt:
            return [0.0] * len(prompt) + weights[len(prompt) :]
        return weights


class Qwen3InstructRenderer(Qwen3Renderer):
    """Qwen3 Instruct-2507 models: no ``<think>`` tag at all. Thinking parts from another model's conversation
    are written ``<think>{t}</think>`` (and stripped from history); no empty block is ever written."""

    name = "qwen3_instruct"
    frames_thinking = False

    def __init__(self, tokenizer: Any, strip_thinking_from_history: bool = True):
        super().__init__(tokenizer, strip_thinking_from_history)
        self.has_extension_property = True

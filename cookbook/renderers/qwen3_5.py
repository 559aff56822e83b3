"""Qwen3.5 / 3.6 text renderers: ``qwen3_5`` (thinking) and ``qwen3_5_disable_thinking``.

Oracle: the Qwen3.5 chat template (llama.cpp's copy, ``Qwen3.5-4B.jinja``). Token format (ChatML)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n...

* **Control tokens.** In the Qwen3.5 tokenizer every added token is *special*: ``<|im_start|>``, ``<|im_end|>``,
  ``<think>``, ``</think>``, ``<tool_call>``, ``</tool_call>``, ``<tool_response>``, ``</tool_response>``. The
  renderer writes them as ids; message content is always encoded literally (``<think>`` typed by a user stays
  text: named deviation ``literal-special-text``). Text between two control tokens is encoded as one piece, as
  the template's tokenization does, so generation prompts are token-exact.
* **Headers.** ``\\n<|im_start|>{role}\\n`` (no leading ``\\n`` for the first message): the ``\\n`` after the previous
  ``<|im_end|>`` opens the next header and is never trained. The output is ``{content}<|im_end|>``.
* **Trimming.** Like the template, every message's content is trimmed (``str.strip()``).
* **Thinking.** An assistant message *after the last user message* is written
  ``<think>\\n{reasoning}\\n</think>\\n\\n{content}`` (reasoning trimmed, possibly empty); an assistant message at or
  before the last user message is ``{content}`` (its reasoning is dropped) -- exactly the template's rule.
  The ``<think>\\n`` opening of the message being produced (the last message of a supervised example) belongs to its **header** (untrained): it is what the
  generation prompt ``...<|im_start|>assistant\\n<think>\\n`` already supplies; the rest of the block
  (``{reasoning}\\n</think>\\n\\n``) is output and is trained. In any other message after the last user message
  (a tool-calling step, or history in a generation prompt) only the ``<think>`` token is header, so that an empty block keeps the template's
  tokens (``<think>``, ``\\n\\n``, ``</think>``) in later generation prompts.
* **Tool calls** follow the text (``\\n\\n`` between them when there is text)::

      <tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>

  calls joined with ``\\n``; VALUE is JSON (``json.dumps``, non-ASCII kept) for objects and arrays, and Jinja's
  ``|string`` (Python ``str``: ``True``, ``None``, ``1.5``) for anything else.
* **Tool responses** are grouped in one ``user`` block: ``<|im_start|>user`` then, per response,
  ``\\n<tool_response>\\n{content}\\n</tool_response>``, then ``<|im_end|>`` after the last of a run.
* **Tool declarations** (:meth:`create_conversation_prefix_with_tools`) are a system message: the template's
  ``# Tools`` block with one ``{"type": "function", "function": spec}`` JSON per line and its ``<IMPORTANT>``
  instructions, then ``\\n\\n{system prompt}``. The fixed scaffolding of that block is written with control
  tokens (the ``<tool_call>`` tags of its example are ``<tool_call>`` tokens, as in the template).

``qwen3_5_disable_thinking`` is the template with ``enable_thinking=False``: the generation prompt ends
``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`` and that whole empty block is the header of an assistant
message after the last user message (never trained); a trained assistant message that reasons raises
:class:`~cookbook.errors.RendererError`.

Stop sequence: ``<|im_end|>``; ``<|endoftext|>`` at the end of a response is an EOS termination.
Neither renderer has the sequence-extension property (reasoning of earlier turns is dropped).
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
    TextEncoder,
    ToolCall,
    ToolSpec,
    TrainOnWhat,
    UnparsedToolCall,
    has_images,
    last_user_index,
    text_of,
    thinking_of,
)
from cookbook.renderers.vision import QWEN3_VL, image_segment


class Lit(str):
    """Message content: encoded literally (special-token text in it stays ordinary text)."""

    __slots__ = ()


Piece = str  # a plain ``str`` is structural text (control-token strings in it become control tokens); ``Lit`` is content


class SegmentWriter:
    """Turns template-like pieces into renderer segments.

    Structural pieces (plain ``str``) are split at the family's control-token strings, which become token ids;
    :class:`Lit` pieces are content and never are. Adjacent text is merged into one segment, so the text between
    two control tokens is encoded in one piece exactly as the template's tokenization does.
    """

    def __init__(self, enc: TextEncoder, control_tokens: Sequence[str]):
        self.ids: dict[str, int] = {t: enc.special(t) for t in control_tokens}
        self._re = re.compile("|".join(re.escape(t) for t in sorted(self.ids, key=len, reverse=True)))

    def __call__(self, *pieces: Piece) -> list[Segment]:
        out: list[Segment] = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                out.append("".join(buf))
                buf.clear()

        for piece in pieces:
            if not piece:
                continue
            if isinstance(piece, Lit):
                buf.append(str(piece))
                continue
            pos = 0
            for m in self._re.finditer(piece):
                buf.append(piece[pos : m.start()])
                flush()
                out.append([self.ids[m.group(0)]])
                pos = m.end()
            buf.append(piece[pos:])
        flush()
        return [s for s in out if s]


def jinja_string(value: Any) -> str:
    """Jinja's ``|string`` filter (Python ``str``): ``True``, ``None``, ``['a', 'b']``."""
    return str(value)


def tojson(value: Any) -> str:
    """transformers' ``tojson`` filter: ``json.dumps`` with default separators and non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False)


def xml_parameter_value(value: Any) -> str:
    """A tool-call argument as the Qwen3.5 / Nemotron 3 templates write it: JSON for objects and arrays,
    ``|string`` for everything else (so ``true`` becomes ``True`` and ``null`` becomes ``None``)."""
    if isinstance(value, dict | list):
        return tojson(value)
    return jinja_string(value)


def split_reasoning(msg: Message) -> tuple[str, str]:
    """``(reasoning, text)`` of an assistant message as the template sees it: thinking parts joined with ``\\n``
    (the ``reasoning_content`` field); for string content with inline ``</think>``, the template's split."""
    content = msg["content"]
    if isinstance(content, str):
        if "</think>" in content:
            before, _, _ = content.partition("</think>")
            after = content.split("</think>")[-1]
            return before.rstrip("\n").split("<think>")[-1].lstrip("\n"), after.lstrip("\n")
        return "", content
    parts: list[ContentPart] = list(content)
    return "\n".join(thinking_of(parts)), text_of(parts)


def xml_tool_call_pieces(call: ToolCall) -> list[Piece]:
    """``<tool_call>\\n<function=NAME>\\n`` + parameters + ``</function>\\n</tool_call>`` (no separator)."""
    args = call.arguments_dict()
    if not isinstance(args, dict):
        raise RendererError(f"tool call {call.name!r}: arguments must be a JSON object, got {call.arguments!r}")
    pieces: list[Piece] = ["<tool_call>\n<function=", Lit(call.name), ">\n"]
    for key, value in args.items():
        pieces += ["<parameter=", Lit(key), ">\n", Lit(xml_parameter_value(value)), "\n</parameter>\n"]
    pieces.append("</function>\n</tool_call>")
    return pieces


_XML_CALL = re.compile(r"^\s*<tool_call>\s*<function=([^>\n]+)>\n?(.*?)</function>\s*</tool_call>\s*$", re.DOTALL)
_XML_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>\n?", re.DOTALL)
_BLOCKS = re.compile(r"<think>(.*?)</think>|<tool_call>(.*?)</tool_call>", re.DOTALL)


def parse_xml_tool_call(raw: str) -> ToolCall | UnparsedToolCall:
    """``<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n...</function>\\n</tool_call>`` ->
    :class:`ToolCall` (each value ``json.loads``-ed when it is JSON, else kept as the string), or
    :class:`UnparsedToolCall` when the block is not of that shape."""
    m = _XML_CALL.match(raw)
    if m is None:
        return UnparsedToolCall(raw_text=raw, error="<tool_call> block is not <function=NAME>...</function>")
    name, body = m.group(1).strip(), m.group(2)
    args: dict[str, Any] = {}
    pos = 0
    for pm in _XML_PARAM.finditer(body):
        if body[pos : pm.start()].strip():
            return UnparsedToolCall(raw_text=raw, error=f"unexpected text in <tool_call>: {body[pos:pm.start()]!r}")
        value = pm.group(2)
        try:
            args[pm.group(1).strip()] = json.loads(value)
        except json.JSONDecodeError:
            args[pm.group(1).strip()] = value
        pos = pm.end()
    if body[pos:].strip():
        return UnparsedToolCall(raw_text=raw, error=f"unexpected text in <tool_call>: {body[pos:]!r}")
    return ToolCall(name=name, arguments=json.dumps(args, ensure_ascii=False))


def parse_think_and_xml_calls(text: str) -> Message:
    """Decoded assistant text (think block already opened) -> message: ``<think>...</think>`` -> a thinking part
    (trimmed; empty dropped), text trimmed, ``<tool_call>`` blocks -> tool calls / unparsed tool calls."""
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    unparsed: list[UnparsedToolCall] = []
    texts: list[str] = []
    pos = 0
    for m in _BLOCKS.finditer(text):
        texts.append(text[pos : m.start()])
        if m.group(1) is not None:
            if m.group(1).strip():
                parts.append({"type": "thinking", "thinking": m.group(1).strip()})
        else:
            parsed = parse_xml_tool_call(m.group(0))
            if isinstance(parsed, ToolCall):
                calls.append(parsed)
            else:
                unparsed.append(parsed)
        pos = m.end()
    tail = text[pos:]
    if tail.count("<tool_call>") > tail.count("</tool_call>"):
        start = tail.rindex("<tool_call>")
        unparsed.append(UnparsedToolCall(raw_text=tail[start:], error="unterminated <tool_call> block"))
    texts.append(tail)
    body = "".join(texts).strip()
    if body:
        parts.append({"type": "text", "text": body})
    msg: Message = {"role": "assistant", "content": parts if thinking_of(parts) else body}
    if calls:
        msg["tool_calls"] = calls
    if unparsed:
        msg["unparsed_tool_calls"] = unparsed
    return msg


QWEN3_5_TOOLS_PREAMBLE = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified "
    "format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n- You may provide optional reasoning for your function call in "
    "natural language BEFORE the function call, but NOT after\n- If there is no function call available, answer "
    "the question like normal with your current knowledge and do not tell the user about function calls\n"
    "</IMPORTANT>"
)  # shared verbatim by the Qwen3.5 and Nemotron 3 templates


def declaration_pieces(text: str, preamble: str) -> list[Piece]:
    """System text -> pieces: the tool-declaration scaffolding (``preamble`` ... :data:`TOOLS_INSTRUCTIONS`)
    that :meth:`create_conversation_prefix_with_tools` writes is structural, everything else is content."""
    start = text.find(preamble)
    end = text.find(TOOLS_INSTRUCTIONS, start + len(preamble)) if start >= 0 else -1
    if start < 0 or end < 0:
        return [Lit(text)]
    body_end = end + len(TOOLS_INSTRUCTIONS)
    return [Lit(text[:start]), preamble, Lit(text[start + len(preamble) : end]), TOOLS_INSTRUCTIONS, Lit(text[body_end:])]


#: True while a generation prompt is rendered: its last message is history, not the message being produced


class Qwen3_5Renderer(Renderer):
    """Qwen3.5 / 3.6 in thinking mode (the template with ``enable_thinking`` unset)."""

    name = "qwen3_5"
    supports_thinking = True
    supports_tools = True
    supports_images = True
    has_extension_property = False
    #: the header of an assistant message after the last user message (``<think>\n`` or the empty block)
    think_opening: str = "<think>\n"

    CONTROL_TOKENS = (
        "<|im_start|>", "<|im_end|>", "<think>", "</think>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
        "<|vision_start|>", "<|vision_end|>",
    )

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.im_end = self.w.ids["<|im_end|>"]
        self.endoftext = self.enc.special("<|endoftext|>")
        self.image_pad = self.enc.special("<|image_pad|>")

    # ------------------------------------------------------------------------------------------ rendering
    def _open(self, role: str, ctx: RenderContext) -> str:
        return ("\n" if ctx.idx > 0 else "") + "<|im_start|>" + role + "\n"

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "tool":
            return self._render_tool_response(msg, ctx)
        if role == "assistant":
            return self._render_assistant(msg, ctx)
        if role != "system" and has_images(msg["content"]):
            return RenderedMessage(header=self.w(self._open(role, ctx)), output=self._vision_content(msg, ctx))
        text = text_of(msg["content"]).strip()
        body = declaration_pieces(text, QWEN3_5_TOOLS_PREAMBLE) if role == "system" else [Lit(text)]
        return RenderedMessage(header=self.w(self._open(role, ctx)), output=self.w(*body, "<|im_end|>"))

    def _vision_content(self, msg: Message, ctx: RenderContext) -> list[Segment]:
        """Text and images in order, ``{text}<|vision_start|>[image]<|vision_end|>...<|im_end|>``; the content is
        trimmed as a whole (the template's ``|trim``), so only its first and last text parts lose whitespace."""
        content = msg["content"]
        parts: list[dict[str, Any]] = [dict(p) for p in content if p["type"] != "thinking"] if isinstance(content, list) else []
        out: list[Segment] = []
        for j, p in enumerate(parts):
            if p["type"] == "image":
                where = f"message {ctx.idx} part {j}"
                out += self.w("<|vision_start|>")
                out.append(image_segment(p["image"], QWEN3_VL, self.image_pad, where))
                out += self.w("<|vision_end|>")
                continue
            text = str(p["text"])
            if j == 0:
                text = text.lstrip()
            if j == len(parts) - 1:
                text = text.rstrip()
            out += self.w(Lit(text))
        return out + self.w("<|im_end|>")

    def _render_assistant(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        reasoning, text = split_reasoning(msg)
        reasoning, text = reasoning.strip(), text.strip()
        header: list[Piece] = [self._open("assistant", ctx)]
        body: list[Piece] = []
        if ctx.idx > ctx.last_user_index:  # the template frames every message after the last user query
            if reasoning or self.think_opening == "<think>\n":
                if ctx.is_last and not ctx.for_prompt:  # being produced: the prompt supplied "<think>\n"
                    header.append("<think>\n")
                    body += [Lit(reasoning), "\n</think>\n\n"]
                else:  # history: keep the template's tokens ("\n\n" of an empty block is one token)
                    header.append("<think>")
                    body += ["\n", Lit(reasoning), "\n</think>\n\n"]
            else:
                header.append(self.think_opening)
        body.append(Lit(text))
        calls = msg.get("tool_calls") or []
        for i, call in enumerate(calls):
            body.append(("\n\n" if text else "") if i == 0 else "\n")
            body += xml_tool_call_pieces(call)
        body.append("<|im_end|>")
        return RenderedMessage(header=self.w(*header), output=self.w(*body))

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``\\n<|im_start|>assistant\\n<think>\\n`` (thinking) or ``...<think>\\n\\n</think>\\n\\n`` (disabled);
        for another role its plain header."""
        if role != "assistant":
            return self.w(self._open(role, ctx))
        return self.w(self._open(role, ctx), self.think_opening)


    def _render_tool_response(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        continues = ctx.prev is not None and ctx.prev["role"] == "tool"
        followed = ctx.next is not None and ctx.next["role"] == "tool"
        header = [] if continues else self.w(self._open("user", ctx)[:-1])
        body: list[Piece] = ["\n<tool_response>\n", Lit(text_of(msg["content"]).strip()), "\n</tool_response>"]
        if not followed:
            body.append("<|im_end|>")
        return RenderedMessage(header=header, output=self.w(*body))

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message declaring ``tools`` (one ``{"type": "function", "function": spec}`` JSON per line,
        then the template's instructions), followed by ``\\n\\n{system_prompt}`` when one is given."""
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        lines = "".join("\n" + tojson({"type": "function", "function": dict(t)}) for t in tools)
        text = QWEN3_5_TOOLS_PREAMBLE + lines + TOOLS_INSTRUCTIONS
        if system_prompt and system_prompt.strip():
            text += "\n\n" + system_prompt.strip()
        return [{"role": "system", "content": text}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]:
        """Sampled tokens (after the generation prompt) -> assistant message.

        One ``<|im_end|>`` at the end: ``STOP_SEQUENCE``; ``<|endoftext|>`` at the end instead: ``EOS``; neither:
        ``MALFORMED`` with the raw decoded text (nothing parsed); a stop token that is not last, or two:
        :class:`RendererError`. The prompt's ``<think>`` is restored when the text closes a think block.
        """
        tokens = [int(t) for t in response]
        if tokens and tokens[-1] == self.endoftext and self.im_end not in tokens:
            body, term = tokens[:-1], ParseTermination.EOS
        else:
            body, term = self.split_on_stop_token(tokens, self.im_end)
        text = self.decode(body)
        if term is ParseTermination.MALFORMED:
            return {"role": "assistant", "content": text}, term
        if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
            text = "<think>" + text
        return parse_think_and_xml_calls(text), term


class Qwen3_5DisableThinkingRenderer(Qwen3_5Renderer):
    """Qwen3.5 with ``enable_thinking=False``: the empty block ``<think>\\n\\n</think>\\n\\n`` is pre-filled by the
    generation prompt and is the (untrained) header of every non-reasoning assistant message after the last user
    message; a trained assistant message that reasons raises :class:`RendererError`."""

    name = "qwen3_5_disable_thinking"
    disables_thinking = True
    think_opening = "<think>\n\n</think>\n\n"

    def _untrain_generation_prompt(
        self,
        messages: Sequence[Message],
        mode: TrainOnWhat,
        tokens: list[int],
        weights: list[float],
        memo: dict[str, list[int]] | None = None,
    ) -> list[float]:
        boundary = len(messages) - 1 if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE else last_user_index(messages) + 1
        for i in range(max(boundary, 0), len(messages)):
            if messages[i]["role"] == "assistant" and split_reasoning(messages[i])[0].strip():
                raise RendererError(
                    f"renderer {self.name!r} disables thinking, but assistant message {i} reasons; its generation "
                    "prompt pre-fills an empty <think></think> block, so the model could never have produced it. "
                    "Use the 'qwen3_5' renderer or remove the reasoning."
                )
        return weights


"""Qwen3.5 / 3.6 / 3.8 renderers: ``qwen3_5`` (thinking), ``qwen3_5_disable_thinking``, ``qwen3_5_preserve_thinking``
and Qwen3.8's ``qwen3_8_xhigh_reasoning``, ``qwen3_8_medium_reasoning``, ``qwen3_8_low_reasoning`` and
``qwen3_8_disable_thinking`` (the same family: one tokenizer, the same ChatML blocks, think blocks and XML tool
calls; the later templates' changes are options, see :class:`Qwen3_5Renderer`).

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

``qwen3_5_preserve_thinking`` is the ``preserve_thinking`` template input (Qwen3.6's template has it; tml-renderers'
``Qwen35(strip_thinking_from_history=False)``): every assistant message keeps its reasoning and its think block, not
only those after the last user message.

Qwen3.8 (``qwen3_8_*``; oracle tml-renderers' ``Qwen38``, no Qwen3.8 template reaches a registry) changes the
Qwen3.5 template in five places: ``preserve_thinking`` is on by default; the ``reasoning_effort`` input (``xhigh``,
the default, ``medium``, ``low``) puts an instruction sentence first in the system message (a system message of its
own when there is none; ``medium`` has no sentence, nor has ``enable_thinking=False``); a system message that is
empty after trimming writes nothing; non-string tool arguments are written with ``|tojson`` (``true``, ``null``); and
``<think>`` inside string content is content (reasoning comes only from thinking parts).

Stop sequence: ``<|im_end|>``; ``<|endoftext|>`` at the end of a response is an EOS termination.
No renderer of the family has the sequence-extension property: a produced turn is sampled after the prompt's
``<think>\\n`` (so its text starts a new piece), while history writes ``<think>`` and then ``\\n{reasoning}`` as one
piece, which tokenizes differently; without ``preserve_thinking`` the reasoning of earlier turns is also dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cookbook.errors import ConfigurationError, RendererError
from cookbook.renderers.base import (
    Message,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolSpec,
    has_images,
    text_of,
    thinking_of,
)
from cookbook.renderers.kit.parsing import parse_think_and_calls
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter, tojson
from cookbook.renderers.kit.thinking import restore_think_opening, split_reasoning
from cookbook.renderers.kit.tools import (
    XML_TOOLS_INSTRUCTIONS,
    XML_TOOLS_PREAMBLE,
    declaration_pieces,
    parse_xml_tool_call,
    tool_run,
    xml_parameter_value,
    xml_tool_call_pieces,
)
from cookbook.renderers.kit.vision import QWEN3_VL, content_runs

__all__ = ["Qwen3_5Renderer", "parse_xml_tool_call", "xml_parameter_value"]

EMPTY_THINK = "<think>\n\n</think>\n\n"

#: Qwen3.8's reasoning-effort instructions (the sentences tinker-cookbook 0.6.1 and PI renderers both give for the
#: Qwen3.8-27B template's ``reasoning_effort`` input; ``medium``, the middle level, has none)
REASONING_EFFORT: dict[str, str] = {
    "xhigh": "Reasoning effort is set to xhigh. Please think carefully through the task, validate key assumptions, "
    "consider plausible alternatives, and prioritize correctness, consistency, and clarity in the final answer.",
    "medium": "",
    "low": "Reasoning effort is set to low. Keep your thinking brief and focused, moving directly to the conclusion "
    "without unnecessary elaboration.",
}


class Qwen3_5Renderer(Renderer):
    """Qwen3.5 / 3.6 in thinking mode (the template with ``enable_thinking`` unset)."""

    name = "qwen3_5"
    supports_thinking = True
    supports_tools = True
    supports_images = True
    has_extension_property = False
    thinking_renderer = "qwen3_5"
    disabled_thinking_prefill = "its generation prompt pre-fills an empty <think></think> block"

    CONTROL_TOKENS = (
        "<|im_start|>", "<|im_end|>", "<think>", "</think>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
        "<|vision_start|>", "<|vision_end|>",
    )

    def __init__(
        self,
        tokenizer: Any,
        enable_thinking: bool = True,
        preserve_thinking: bool = False,
        reasoning_effort: str | None = None,
        omit_empty_system: bool = False,
        json_arguments: bool = False,
        inline_thinking: bool = True,
        bare_history_thinking: bool = False,
    ):
        """``enable_thinking=False`` (``qwen3_5_disable_thinking``): the generation prompt pre-fills the empty block
        ``<think>\n\n</think>\n\n``, the untrained header of every non-reasoning assistant message after the last
        user message; a trained assistant message that reasons is refused.

        The other options are the template inputs and template changes of later releases (all off: Qwen3.5):

        * ``preserve_thinking`` (the ``preserve_thinking`` template input; Qwen3.6 and Qwen3.8's default): every
          assistant message keeps its think block, not only those after the last user message.
        * ``reasoning_effort`` (Qwen3.8: ``"xhigh"``, ``"medium"`` or ``"low"``): the template's instruction sentence
          for that effort opens the system message (a system message of its own when the conversation has none);
          ``medium`` has none, and with thinking disabled there is none.
        * ``omit_empty_system`` (Qwen3.8): a system message that is empty after trimming writes nothing.
        * ``json_arguments`` (Qwen3.6 / 3.8): non-string tool-call arguments are written with ``|tojson``.
        * ``inline_thinking=False`` (Qwen3.8): ``<think>``...``</think>`` inside string content is content, not
          reasoning (the template reads reasoning only from ``reasoning_content``, i.e. thinking parts).

        ``bare_history_thinking`` (``qwen3_5_preserve_thinking``, as tml-renderers' ``Qwen35(strip_thinking_from_history=
        False)`` writes it; no template has it: the Qwen3.5 template has no ``preserve_thinking`` input): an assistant
        message before the last user message that reasons keeps its reasoning as ``<think>{reasoning}</think>``
        directly before its text (no newlines; no block when it does not reason).
        """
        super().__init__(tokenizer)
        if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORT:
            raise ConfigurationError(
                f"reasoning_effort must be one of {', '.join(REASONING_EFFORT)} or None, got {reasoning_effort!r}"
            )
        self.disables_thinking = not enable_thinking
        self.preserve_thinking = preserve_thinking
        self.reasoning_effort = reasoning_effort
        #: the sentence that opens the system message ("" for none)
        self.instruction = REASONING_EFFORT[reasoning_effort] if reasoning_effort and enable_thinking else ""
        self.omit_empty_system = omit_empty_system
        self.json_arguments = json_arguments
        self.inline_thinking = inline_thinking
        self.bare_history_thinking = bare_history_thinking
        #: the header of an assistant message after the last user message (``<think>\n`` or the empty block)
        self.think_opening = "<think>\n" if enable_thinking else EMPTY_THINK
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.im_end = self.w.ids["<|im_end|>"]
        self.eos_token_id = self.endoftext = self.enc.special("<|endoftext|>")
        self.image_pad = self.enc.special("<|image_pad|>")

    # ------------------------------------------------------------------------------------------ rendering
    def _open(self, role: str, ctx: RenderContext) -> str:
        """``\\n<|im_start|>{role}\\n``; no ``\\n`` for the first message written (the first message, or the second
        when an empty system message wrote nothing). With a reasoning-effort instruction and no system message, the
        first header is preceded by the instruction's own system message."""
        first = ctx.idx == 0 or (ctx.idx == 1 and ctx.prev is not None and self._writes_nothing(ctx.prev))
        lead = "" if first else "\n"
        if ctx.idx == 0 and role != "system" and self.instruction:
            lead = "<|im_start|>system\n" + self.instruction + "<|im_end|>\n"
        return lead + "<|im_start|>" + role + "\n"

    def _writes_nothing(self, msg: Message) -> bool:
        """A first message that renders to nothing: an empty system message under ``omit_empty_system``."""
        return (
            self.omit_empty_system
            and msg["role"] == "system"
            and not self.instruction
            and not text_of(msg["content"]).strip()
        )

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "system" and has_images(msg["content"]):
            # the template: raise_exception('System message cannot contain images.')
            raise RendererError(
                f"message {ctx.idx} (system) has an image part; the Qwen3.5 chat template refuses images in a system "
                "message: move the image into a user message"
            )
        if role == "tool":
            return self._render_tool_response(msg, ctx)
        if role == "assistant":
            return self._render_assistant(msg, ctx)
        if role != "system" and has_images(msg["content"]):
            content = self._vision_content(msg["content"], ctx.idx)
            return RenderedMessage(header=self.w(self._open(role, ctx)), output=content + self.w("<|im_end|>"))
        text = text_of(msg["content"]).strip()
        if role != "system":
            return RenderedMessage(header=self.w(self._open(role, ctx)), output=self.w(Lit(text), "<|im_end|>"))
        if ctx.idx == 0 and self._writes_nothing(msg):
            return RenderedMessage()
        body = declaration_pieces(text, XML_TOOLS_PREAMBLE, XML_TOOLS_INSTRUCTIONS)
        if ctx.idx == 0 and self.instruction:  # the template writes it first, before the tools and the prompt
            body = [self.instruction + ("\n\n" if text else ""), *body]
        return RenderedMessage(header=self.w(self._open(role, ctx)), output=self.w(*body, "<|im_end|>"))

    def _vision_content(self, content: Any, idx: int) -> list[Segment]:
        """Text and images in order, ``{text}<|vision_start|>[image]<|vision_end|>...`` (the template's
        ``render_content``); the content is trimmed as a whole (the template's ``|trim``), so only the text before
        the first image and after the last one lose whitespace. Thinking parts are left out (they are reasoning)."""
        runs = content_runs(content, QWEN3_VL, self.image_pad, idx)
        if runs and isinstance(runs[0], str):
            runs[0] = runs[0].lstrip()
        if runs and isinstance(runs[-1], str):
            runs[-1] = runs[-1].rstrip()
        out: list[Segment] = []
        for r in runs:
            if isinstance(r, str):
                out += self.w(Lit(r))
            else:
                out += self.w("<|vision_start|>")
                out.append(r)
                out += self.w("<|vision_end|>")
        return out

    def _reasoning_and_text(self, msg: Message) -> tuple[str, str]:
        if self.inline_thinking:
            return split_reasoning(msg)
        content = msg["content"]
        return "\n".join(thinking_of(content)), text_of(content)

    def reasons(self, msg: Message) -> bool:
        return bool(self._reasoning_and_text(msg)[0].strip())

    def _render_assistant(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        images = has_images(msg["content"])
        if images:  # list content: reasoning from thinking parts, content = text and images (the template's render_content)
            reasoning, text = "\n".join(thinking_of(msg["content"])).strip(), ""
            if "</think>" in text_of(msg["content"]) and self.inline_thinking:
                raise RendererError(
                    f"message {ctx.idx} (assistant) has an image part and inline </think> text; the template would "
                    "split its rendered content at </think>: give the reasoning as a thinking part instead"
                )
        else:
            reasoning, text = self._reasoning_and_text(msg)
            reasoning, text = reasoning.strip(), text.strip()
        header: list[Piece] = [self._open("assistant", ctx)]
        body: list[Piece] = []
        # the template frames every message after the last user query (every message with preserve_thinking)
        if self.bare_history_thinking and ctx.idx < ctx.last_user_index:
            if reasoning:
                body += ["<think>", Lit(reasoning), "</think>"]
        elif self.preserve_thinking or ctx.idx > ctx.last_user_index:
            if reasoning or self.think_opening == "<think>\n":
                if ctx.is_last and not ctx.for_prompt:  # being produced: the prompt supplied "<think>\n"
                    header.append("<think>\n")
                    body += [Lit(reasoning), "\n</think>\n\n"]
                else:  # history: keep the template's tokens ("\n\n" of an empty block is one token)
                    header.append("<think>")
                    body += ["\n", Lit(reasoning), "\n</think>\n\n"]
            else:
                header.append(self.think_opening)
        content: list[Segment] = self._vision_content(msg["content"], ctx.idx) if images else []
        if not images:
            body.append(Lit(text))
        tail: list[Piece] = []
        calls = msg.get("tool_calls") or []
        for i, call in enumerate(calls):
            tail.append(("\n\n" if text or content else "") if i == 0 else "\n")
            tail += xml_tool_call_pieces(call, self.json_arguments)
        tail.append("<|im_end|>")
        return RenderedMessage(header=self.w(*header), output=self.w(*body) + content + self.w(*tail))

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``\\n<|im_start|>assistant\\n<think>\\n`` (thinking) or ``...<think>\\n\\n</think>\\n\\n`` (disabled);
        for another role its plain header."""
        if role != "assistant":
            return self.w(self._open(role, ctx))
        return self.w(self._open(role, ctx), self.think_opening)

    def _render_tool_response(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        continues, followed = tool_run(ctx)
        header = [] if continues else self.w(self._open("user", ctx)[:-1])
        if has_images(msg["content"]):  # the template renders the images in place, inside the tool response
            content = self._vision_content(msg["content"], ctx.idx)
        else:
            content = self.w(Lit(text_of(msg["content"]).strip()))
        tail: list[Piece] = ["\n</tool_response>"]
        if not followed:
            tail.append("<|im_end|>")
        return RenderedMessage(header=header, output=self.w("\n<tool_response>\n") + content + self.w(*tail))

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message declaring ``tools`` (one ``{"type": "function", "function": spec}`` JSON per line,
        then the template's instructions), followed by ``\\n\\n{system_prompt}`` when one is given."""
        system_prompt = system_prompt or None  # "" is no system prompt (tinker-cookbook passes "" by default)
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        lines = "".join("\n" + tojson({"type": "function", "function": dict(t)}) for t in tools)
        text = XML_TOOLS_PREAMBLE + lines + XML_TOOLS_INSTRUCTIONS
        if system_prompt and system_prompt.strip():
            text += "\n\n" + system_prompt.strip()
        return [{"role": "system", "content": text}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text -> assistant message: the prompt's ``<think>`` is restored when the text closes a
        think block; thinking and text are trimmed; ``<tool_call>`` XML blocks become tool calls."""
        return parse_think_and_calls(restore_think_opening(text), parse_xml_tool_call)

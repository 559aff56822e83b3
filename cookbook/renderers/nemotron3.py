"""Nemotron 3 renderers: ``nemotron3`` (thinking), ``nemotron3_disable_thinking`` and the registry variants
``nemotron3_preserve_thinking``, ``nemotron3_low_thinking`` and ``nemotron3_ultra*`` (options of one class, below).

Oracle: the Nemotron 3 Nano chat template (llama.cpp's copy, ``NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja``) with
the Nemotron 3 tokenizer (exported from tml-renderers; control tokens ``<|im_start|>``=10, ``<|im_end|>``=11,
``<think>``=12, ``</think>``=13, ``<tool_call>``=14, ``</tool_call>``=15, ``<tool_response>``=16,
``</tool_response>``=17 are written as ids; content is encoded literally, see ``literal-special-text``).

Token format (ChatML, a close relative of Qwen3.5)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n...

* **System block always present.** When the conversation does not start with a system message, the template
  writes an empty one, ``<|im_start|>system\\n<|im_end|>\\n``; the renderer puts it in the (untrained) header of
  the first message. System, user and tool content is written verbatim (not trimmed).
* **Headers** ``\\n<|im_start|>{role}\\n``: the ``\\n`` after the previous ``<|im_end|>`` opens the next header.
* **Assistant messages at or after the last user message**: ``<think>\\n{reasoning}\\n</think>\\n{text}`` when the
  message reasons, else ``<think></think>{text}``; the whole is right-trimmed. With tool calls: that text, then
  ``\\n``, then each call as ``<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n</function>\\n
  </tool_call>\\n`` (V as in Qwen3.5: JSON for objects/arrays, Python ``str`` otherwise).
* **Assistant messages before the last user message** (history, ``truncate_history_thinking``): the reasoning is
  dropped and the message is ``<think></think>`` + the rest trimmed; a message that had reasoning keeps the
  ``\\n`` that followed ``</think>`` (``<think></think>\\n{text}``), and with tool calls ``<think></think>{text}\\n``.
  The ``<think></think>`` of such a message is its header (untrained: the model never wrote it that way).
* **A reply string with an inline think block** (``"<think>x</think>text"``, both tags in string content) is the
  template's own text, not reasoning to re-frame: at or after the last user message (every message, preserving
  history) it is written as given, trimmed, its two tags the control tokens the template's tokenizer makes of them;
  before the last user message it is ``<think></think>`` + what follows its last ``</think>`` (trimmed, no newline
  added). Only the message being produced reads such a block as reasoning (it continues the prompt's ``<think>\n``).
  The Ultra format writes such a string as literal text, as its oracle tml-renderers does (``<think></think>`` or,
  after the last user message, ``<think>\n</think>`` + the string; preserving history: ``<think></think>`` + the
  string); only the message being produced reads the block as reasoning.
* **The message being produced** (the last message of a supervised example, thinking mode): the ``<think>\\n``
  that the generation prompt ``...<|im_start|>assistant\\n<think>\\n`` supplies is header and the rest,
  ``{reasoning}\\n</think>\\n{text}``, is trained. When it does not reason the template writes
  ``<think></think>{text}``, which is not a continuation of that prompt (the sampler could never produce it); the
  renderer writes the empty block ``<think>\\n\\n</think>\\n{text}`` instead: named deviation
  ``produced-turn-empty-think`` (tinker-cookbook keeps the template's form and so trains an unsampleable turn).
* **Tool responses** are grouped in one ``user`` block: ``<tool_response>\\n{content}\\n</tool_response>\\n`` each,
  then ``<|im_end|>``.
* **Tool declarations** (:meth:`create_conversation_prefix_with_tools`): the system message
  ``{system}\\n\\n# Tools ... <tools>`` with one XML ``<function>`` element per tool (name, description,
  ``<parameters>`` with one ``<parameter>`` per property, extra keys, ``<required>``) and the same instructions
  block as Qwen3.5; the system prompt comes first.

``nemotron3_disable_thinking`` (``enable_thinking=False``): the generation prompt ends
``<|im_start|>assistant\\n<think></think>``; the ``<think></think>`` of a non-reasoning message after the last user
message is header; a trained message that reasons raises :class:`~cookbook.errors.RendererError`.

Stop sequence ``<|im_end|>``; ``</s>`` at the end of a response is an EOS termination. No extension property.

Variants (registry options): ``nemotron3_preserve_thinking`` keeps the reasoning of history messages (the
template's ``truncate_history_thinking=False``); ``nemotron3_low_thinking`` appends ``\n\n{reasoning effort: low}``
to the last user message (Nemotron 3 Super's ``low_effort=True``). The Ultra format (``nemotron3_ultra``, its
``_disable_thinking``, ``_medium_thinking`` and ``_preserve_thinking`` variants; Nemotron 3 Ultra, 3.5 Lightning,
3.5 Super) frames reasoning ``<think>\n{reasoning}</think>{text}`` (oracle: tml-renderers' ``Nemotron3.ultra*()``;
specs/renderers/nemotron3_ultra.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cookbook.errors import ConfigurationError
from cookbook.renderers.base import (
    Message,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolSpec,
    text_of,
)
from cookbook.renderers.kit.parsing import parse_think_and_calls
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter, jinja_string, tojson
from cookbook.renderers.kit.thinking import (
    END_THINK,
    THINK,
    inline_think_block,
    restore_think_opening,
    split_reasoning,
)
from cookbook.renderers.kit.tools import (
    XML_TOOLS_INSTRUCTIONS,
    XML_TOOLS_PREAMBLE,
    declaration_pieces,
    parse_xml_tool_call,
    tool_run,
    xml_tool_call_pieces,
)

NEMOTRON3_TOOLS_PREAMBLE = XML_TOOLS_PREAMBLE  # identical text in the Qwen3.5 and Nemotron 3 templates
_EMPTY_SYSTEM = "<|im_start|>system\n<|im_end|>\n"
#: the effort directive the templates append to the last user message ("low": Nemotron 3 Super's template with
#: low_effort=True; "medium": the Ultra-format templates with medium_effort=True), as tml-renderers writes it
EFFORT_SUFFIXES = {"low": "\n\n{reasoning effort: low}", "medium": "\n\n{reasoning effort: efficient}"}


def _extra_keys(obj: Any, handled: Sequence[str]) -> str:
    """The template's ``render_extra_keys``: ``\\n<key>value</key>`` for every unhandled key (JSON for objects and
    arrays, ``|string`` otherwise)."""
    if not isinstance(obj, Mapping):
        return ""
    out = []
    for key, value in obj.items():
        if key in handled:
            continue
        shown = tojson(value) if isinstance(value, Mapping | list | tuple) else jinja_string(value)
        out.append(f"\n<{key}>{shown}</{key}>")
    return "".join(out)


def tool_declaration_xml(tool: Mapping[str, Any]) -> str:
    """One tool as the template's ``<function>`` element (an OpenAI ``{"type": "function", "function": ...}``
    wrapper is unwrapped first)."""
    if isinstance(tool.get("function"), Mapping):
        tool = tool["function"]
    out = ["\n<function>\n<name>" + str(tool["name"]) + "</name>"]
    if "description" in tool:
        out.append("\n<description>" + str(tool["description"]).strip() + "</description>")
    out.append("\n<parameters>")
    params = tool.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    if isinstance(props, Mapping):
        for pname, fields in props.items():
            out.append("\n<parameter>\n<name>" + str(pname) + "</name>")
            if isinstance(fields, Mapping):
                if "type" in fields:
                    out.append("\n<type>" + jinja_string(fields["type"]) + "</type>")
                if "description" in fields:
                    out.append("\n<description>" + str(fields["description"]).strip() + "</description>")
                if "enum" in fields:
                    out.append("\n<enum>" + tojson(fields["enum"]) + "</enum>")
            out.append(_extra_keys(fields, ("name", "type", "description", "enum")))
            out.append("\n</parameter>")
    out.append(_extra_keys(params, ("type", "properties", "required")))
    if isinstance(params, Mapping) and "required" in params:
        out.append("\n<required>" + tojson(params["required"]) + "</required>")
    out.append("\n</parameters>")
    out.append(_extra_keys(tool, ("type", "name", "description", "parameters")))
    out.append("\n</function>")
    return "".join(out)


class Nemotron3Renderer(Renderer):
    """Nemotron 3 (Nano / Super) in thinking mode (the template with ``enable_thinking`` unset)."""

    name = "nemotron3"
    supports_thinking = True
    supports_tools = True
    has_extension_property = False
    thinking_renderer = "nemotron3"
    disabled_thinking_prefill = "its generation prompt pre-fills <think></think>"

    CONTROL_TOKENS = (
        "<|im_start|>", "<|im_end|>", "<think>", "</think>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    )

    def __init__(
        self,
        tokenizer: Any,
        enable_thinking: bool = True,
        strip_thinking_from_history: bool = True,
        reasoning_effort: str | None = None,
        ultra: bool = False,
    ):
        """``enable_thinking=False`` (``nemotron3_disable_thinking``): the prompt pre-fills ``<think></think>``; a
        trained assistant message (at or after the boundary of the training mode) that reasons is refused.

        ``strip_thinking_from_history=False`` (``nemotron3_preserve_thinking``; the template's
        ``truncate_history_thinking=False``): assistant messages before the last user message keep their reasoning
        and are written like the messages after it.

        ``reasoning_effort`` (``"low"``: ``nemotron3_low_thinking``, the Super template's ``low_effort=True``): the
        last user message ends with :data:`EFFORT_SUFFIXES` ``[effort]`` (``"medium"``:
        ``nemotron3_ultra_medium_thinking``, the Ultra-format templates' ``medium_effort=True``).

        ``ultra=True`` (``nemotron3_ultra*``: Nemotron 3 Ultra, 3.5 Lightning, 3.5 Super): reasoning is framed
        ``<think>\n{reasoning}</think>{text}``, with no newline before or after ``</think>``, and a history message
        whose reasoning is truncated is ``<think></think>{text}`` (no newline kept).
        """
        super().__init__(tokenizer)
        if reasoning_effort is not None and reasoning_effort not in EFFORT_SUFFIXES:
            raise ConfigurationError(
                f"Nemotron3Renderer: reasoning_effort must be one of {sorted(EFFORT_SUFFIXES)} or None, "
                f"got {reasoning_effort!r}"
            )
        self.disables_thinking = not enable_thinking
        self.strip_thinking_from_history = strip_thinking_from_history
        #: text appended to the last user message (the effort directive), "" for none
        self.effort_suffix = EFFORT_SUFFIXES[reasoning_effort] if reasoning_effort else ""
        self.ultra = ultra
        #: what closes the reasoning, up to the text: "\n</think>\n" (Nano / Super) or "</think>" (Ultra format)
        self.think_close = "</think>" if ultra else "\n</think>\n"
        #: what the generation prompt pre-fills after ``<|im_start|>assistant\n``
        self.prefill_block = "<think>\n" if enable_thinking else "<think></think>"
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.im_end = self.w.ids["<|im_end|>"]
        self.eos_token_id = self.eos = self.enc.special("</s>")

    # ------------------------------------------------------------------------------------------ rendering
    def _open(self, role: str, ctx: RenderContext) -> str:
        if ctx.idx == 0:
            lead = "" if role == "system" else _EMPTY_SYSTEM
        else:
            lead = "\n"
        return lead + "<|im_start|>" + role + "\n"

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "assistant":
            return self._render_assistant(msg, ctx)
        if role == "tool":
            continues, followed = tool_run(ctx)
            header = [] if continues else self.w(self._open("user", ctx))
            body: list[Piece] = ["<tool_response>\n", Lit(text_of(msg["content"])), "\n</tool_response>\n"]
            if not followed:
                body.append("<|im_end|>")
            return RenderedMessage(header=header, output=self.w(*body))
        text = text_of(msg["content"])
        if role == "user" and self.effort_suffix and ctx.idx == ctx.last_user_index:
            text += self.effort_suffix  # one piece: encoded together with the content, as the template does
        pieces = declaration_pieces(text, NEMOTRON3_TOOLS_PREAMBLE, XML_TOOLS_INSTRUCTIONS) if role == "system" else [Lit(text)]
        return RenderedMessage(header=self.w(self._open(role, ctx)), output=self.w(*pieces, "<|im_end|>"))

    def _render_assistant(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        reasoning, text = split_reasoning(msg)
        calls = msg.get("tool_calls") or []
        content = msg["content"]
        # Ultra format (tml-renderers, its oracle): string content is text, think tags and all, except in the
        # message being produced (the last one of a supervised example), which continues the prompt's "<think>\n"
        literal = self.ultra and isinstance(content, str) and (ctx.for_prompt or not ctx.is_last)
        if literal:
            reasoning, text = "", str(content)
        reasons = bool(reasoning.strip())
        # Nano / Super: string content with both think tags is the template's own text, not reasoning to re-frame
        tagged = not self.ultra and isinstance(content, str) and THINK in content and END_THINK in content
        header: list[Piece] = [self._open("assistant", ctx)]
        body: list[Piece] = []
        if self.strip_thinking_from_history and ctx.idx < ctx.last_user_index:  # history: reasoning truncated
            header.append("<think></think>")
            if calls:
                body += [Lit(text.strip()), "\n"]
            else:  # Nano / Super keep the "\n" that followed the truncated </think>; the Ultra format does not
                if tagged:  # the template: "<think></think>" + what follows the last </think>, as written
                    kept = str(content).split(END_THINK)[-1]
                else:
                    kept = "\n" + text if reasons and not self.ultra else text
                rest = ("<think></think>" + kept).strip()
                body.append(Lit(rest[len("<think></think>") :]))
        else:
            produced = ctx.is_last and not ctx.for_prompt and self.prefill_block == "<think>\n"
            # a produced turn always continues the prompt's "<think>\n" (deviation); the Ultra format (thinking on)
            # frames every message after the last user message, with empty reasoning if need be (tml-renderers)
            framed = self.ultra and self.prefill_block == "<think>\n" and ctx.idx > ctx.last_user_index
            block = inline_think_block(content) if tagged and not produced else None
            if block is not None:  # written as given, trimmed: its tags are the control tokens the template's are
                lead, thought, after = block
                body += [Lit(lead.lstrip()), "<think>", Lit(thought), "</think>", Lit(after.rstrip())]
            elif literal and framed:  # "<think>\n</think>" + the text as written (_split_think would cut it)
                body += ["<think>\n", "</think>", Lit(text.rstrip())]
            elif reasons or produced or framed:
                full = ("<think>\n" + reasoning + self.think_close + text).rstrip()
                if produced:
                    header.append("<think>\n")
                    full = full[len("<think>\n") :]
                body += self._split_think(full)
            elif self.prefill_block != "<think>\n":  # disabled: the prompt supplies <think></think>
                header.append("<think></think>")
                body.append(Lit(text.rstrip()))
            else:
                body += ["<think></think>", Lit(text.rstrip())]
            if calls:
                body.append("\n")
        for call in calls:
            body += [*xml_tool_call_pieces(call), "\n"]
        body.append("<|im_end|>")
        return RenderedMessage(header=self.w(*header), output=self.w(*body))

    def _split_think(self, full: str) -> list[Piece]:
        """``[<think>\\n]reasoning\\n</think>\\ntext`` (Ultra: ``[<think>\\n]reasoning</think>text``): the tags are
        structural, reasoning and text are content."""
        close = "</think>" if self.ultra else "\n</think>"
        head, sep, tail = full.rpartition(close)
        if not sep:
            return [Lit(full)]
        opening = "<think>\n" if head.startswith("<think>\n") else ""
        return [opening, Lit(head[len(opening) :]), close, Lit(tail)]

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``\\n<|im_start|>assistant\\n<think>\\n`` (thinking) or ``...<think></think>`` (disabled)."""
        if role != "assistant":
            return self.w(self._open(role, ctx))
        return self.w(self._open(role, ctx), self.prefill_block)

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message: ``{system_prompt}\\n\\n`` (when non-empty), then the ``# Tools`` block with one XML
        ``<function>`` per tool and the template's instructions."""
        system_prompt = system_prompt or None  # "" is no system prompt (tinker-cookbook passes "" by default)
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        decl = NEMOTRON3_TOOLS_PREAMBLE + "".join(tool_declaration_xml(dict(t)) for t in tools) + XML_TOOLS_INSTRUCTIONS
        text = (system_prompt + "\n\n" if system_prompt else "") + decl
        return [{"role": "system", "content": text}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text -> assistant message (stop ``<|im_end|>``, ``</s>`` an EOS): the prompt's ``<think>``
        is restored when the text closes a think block; thinking, text and ``<tool_call>`` XML blocks are parsed
        as for Qwen3.5."""
        return parse_think_and_calls(restore_think_opening(text), parse_xml_tool_call)

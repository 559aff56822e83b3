"""Tool formats shared by several families: JSON tool calls (Qwen3), XML tool calls and the XML tool instructions
(Qwen3.5, Nemotron 3), the tool-declaration scaffolding of a system message, and tool-response runs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import RenderContext, ToolCall, UnparsedToolCall
from cookbook.renderers.kit.parsing import collect_arguments
from cookbook.renderers.kit.segments import Lit, Piece, jinja_string, tojson

# ----------------------------------------------------------------------------------------------- declarations


def function_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """``{"type": "function", "function": spec}`` (a tool already wrapped that way is kept as it is)."""
    return dict(tool) if tool.get("type") == "function" else {"type": "function", "function": dict(tool)}


def declaration_pieces(text: str, preamble: str, postamble: str) -> list[Piece]:
    """System text -> pieces: the tool-declaration scaffolding (``preamble`` ... ``postamble``) that a family's
    ``create_conversation_prefix_with_tools`` writes is structural (its tags become control tokens), everything
    else, the tool JSON included, is content."""
    start = text.find(preamble)
    end = text.find(postamble, start + len(preamble)) if start >= 0 else -1
    if start < 0 or end < 0:
        return [Lit(text)]
    body_end = end + len(postamble)
    return [Lit(text[:start]), preamble, Lit(text[start + len(preamble) : end]), postamble, Lit(text[body_end:])]


# ----------------------------------------------------------------------------------------------- tool responses


def tool_run(ctx: RenderContext) -> tuple[bool, bool]:
    """``(continues, followed)`` for a tool message: whether the previous / next message is a tool message too.
    Templates that group consecutive tool responses open the group before the first and close it after the last."""
    continues = ctx.prev is not None and ctx.prev["role"] == "tool"
    followed = ctx.next is not None and ctx.next["role"] == "tool"
    return continues, followed


# ----------------------------------------------------------------------------------------------- JSON tool calls


def tool_call_json(call: ToolCall) -> str:
    """``{"name": ..., "arguments": {...}}`` as a template's ``tojson`` writes it (``json.dumps`` defaults,
    ``ensure_ascii=False``). The arguments string is parsed and re-serialised, so ``'{"x":1}'`` becomes
    ``{"x": 1}``."""
    return json.dumps({"name": call.name, "arguments": call.arguments_dict()}, ensure_ascii=False)


def parse_json_tool_call(payload: str) -> ToolCall | UnparsedToolCall:
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


def object_arguments(call: ToolCall) -> dict[str, Any]:
    """The call's arguments as a JSON object (formats that write one element per argument need one)."""
    args = call.arguments_dict()
    if not isinstance(args, dict):
        raise RendererError(f"tool call {call.name!r}: arguments must be a JSON object, got {call.arguments!r}")
    return args


# ----------------------------------------------------------------------------------------------- XML tool calls

#: the ``# Tools`` opening shared verbatim by the Qwen3.5 and Nemotron 3 templates
XML_TOOLS_PREAMBLE = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
#: the instructions after the declarations, shared verbatim by the Qwen3.5 and Nemotron 3 templates
XML_TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified "
    "format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n- You may provide optional reasoning for your function call in "
    "natural language BEFORE the function call, but NOT after\n- If there is no function call available, answer "
    "the question like normal with your current knowledge and do not tell the user about function calls\n"
    "</IMPORTANT>"
)


def xml_parameter_value(value: Any, json_scalars: bool = False) -> str:
    """A tool-call argument as the XML templates write it: JSON for objects and arrays, ``|string`` for everything
    else (so ``true`` becomes ``True`` and ``null`` becomes ``None``). ``json_scalars=True`` (opt-in; the Qwen3.6 /
    3.8 templates): ``|tojson`` for every value that is not a string (``true``, ``null``, ``1.5``)."""
    if json_scalars:
        return value if isinstance(value, str) else tojson(value)
    if isinstance(value, dict | list):
        return tojson(value)
    return jinja_string(value)


def xml_tool_call_pieces(call: ToolCall, json_scalars: bool = False) -> list[Piece]:
    """``<tool_call>\\n<function=NAME>\\n`` + parameters + ``</function>\\n</tool_call>`` (no separator);
    ``json_scalars`` as in :func:`xml_parameter_value`."""
    pieces: list[Piece] = ["<tool_call>\n<function=", Lit(call.name), ">\n"]
    for key, value in object_arguments(call).items():
        pieces += ["<parameter=", Lit(key), ">\n", Lit(xml_parameter_value(value, json_scalars)), "\n</parameter>\n"]
    pieces.append("</function>\n</tool_call>")
    return pieces


_XML_CALL = re.compile(r"^\s*<tool_call>\s*<function=([^>\n]+)>\n?(.*?)</function>\s*</tool_call>\s*$", re.DOTALL)
_XML_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>\n?", re.DOTALL)


def parse_xml_tool_call(raw: str) -> ToolCall | UnparsedToolCall:
    """``<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n...</function>\\n</tool_call>`` ->
    :class:`ToolCall` (each value ``json.loads``-ed when it is JSON, else kept as the string), or
    :class:`UnparsedToolCall` when the block is not of that shape."""
    m = _XML_CALL.match(raw)
    if m is None:
        return UnparsedToolCall(raw_text=raw, error="<tool_call> block is not <function=NAME>...</function>")
    args = collect_arguments(m.group(2), _XML_PARAM)
    if isinstance(args, str):
        return UnparsedToolCall(raw_text=raw, error=args)
    return ToolCall(name=m.group(1).strip(), arguments=json.dumps(args, ensure_ascii=False))

"""Template-like segment writing shared by the families: structural text vs literal content.

A family writes a message as a sequence of *pieces*: a plain ``str`` is structural text (the family's control-token
strings in it become token ids), a :class:`Lit` is message content (encoded literally, control-token text in it stays
ordinary text). :class:`SegmentWriter` turns pieces into the renderer's segments (``list[int]`` | ``str``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from cookbook.renderers.base import Segment, TextEncoder


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

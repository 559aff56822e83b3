"""Answer extraction from model responses."""

from __future__ import annotations

import re

from cookbook.errors import DataError

_BOXED_BARE = re.compile(r"\\boxed\s+([a-zA-Z0-9]+)")


def extract_boxed(text: str) -> str:
    """Content of the **last** ``\\boxed{...}`` in ``text``, braces matched with a stack.

    Falls back to ``\\boxed 2`` (a bare alphanumeric token). Raises :class:`DataError` (a ``ValueError``)
    on an unmatched ``}`` or when no boxed answer exists. ``\\fbox`` and ``\\boxed {x}`` (space before the
    brace) are not boxed answers, as in tinker-cookbook.
    """
    found: list[str] = []
    stack: list[tuple[int, bool]] = []  # (index after "{", opened right after \boxed)
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append((i + 1, text[max(0, i - 6) : i] == "\\boxed"))
        elif ch == "}":
            if not stack:
                raise DataError(f"Unmatched }} at character {i} of the response")
            start, boxed = stack.pop()
            if boxed:
                found.append(text[start:i])
    if found:
        return found[-1]
    bare = _BOXED_BARE.findall(text)
    if bare:
        return str(bare[-1])
    raise DataError("No boxed strings found: the response has no \\boxed{...} answer")


def extract_gsm8k_answer(solution: str) -> str:
    """GSM8K reference answer: the text after the last ``####`` line, commas removed."""
    if "####" not in solution:
        raise DataError("GSM8K solution has no '####' answer line")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


_INT = re.compile(r"-?\d+")


def last_integer(text: str) -> int | None:
    """The last integer in ``text`` after removing thousands commas (the arithmetic environment's answer)."""
    found = _INT.findall(text.replace(",", ""))
    return int(found[-1]) if found else None

"""String normalisation of math answers (behaviour of tinker-cookbook's two pipelines, re-implemented).

``normalize_mathd`` is the Hendrycks MATH ("MathD") normalisation; ``normalize_answer`` is the broader
pipeline (units, words, LaTeX to text with pylatexenc, lower-casing). Both return ``None`` for ``None``.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------- MathD


def _remove_text_wrapper(s: str) -> str:
    m = re.fullmatch(r"\\text\{(.*)\}", s)
    return m.group(1) if m else s


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}``."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
            continue
        if len(part) < 2:
            return s
        a, b = part[0], part[1]
        if b == "{":
            out += "{" + a + "}" + part[1:]
        else:
            out += "{" + a + "}{" + b + "}" + part[2:]
    return out


def _fix_a_slash_b(s: str) -> str:
    if s.count("/") != 1:
        return s
    a, b = s.split("/")
    if re.fullmatch(r"-?\d+", a) and re.fullmatch(r"\d+", b):
        return f"\\frac{{{a}}}{{{b}}}"
    return s


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)


def _remove_right_units(s: str) -> str:
    if "\\text{ " in s:
        return s.split("\\text{ ")[0]
    return s


def normalize_mathd(answer: str | None) -> str | None:
    """MathD normalisation: strip LaTeX decoration so equal answers compare equal as strings."""
    if answer is None:
        return None
    s = _remove_text_wrapper(answer.strip())
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    eq = s.split("=")
    if len(eq) == 2 and len(eq[0]) <= 2:
        s = eq[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


# --------------------------------------------------------------------------------------------- broad pipeline

_UNITS = (
    "degree|cm|centimeter|meter|mile|second|minute|hour|day|week|month|year|foot|feet|inch|yard"
)
_UNIT_RE = re.compile(rf"(?:{_UNITS})(?:e?s)?(?:\^[0-9]+)?")
_SCALE = {"million": "*10^6", "billion": "*10^9", "trillion": "*10^12"}


def _latex_to_text(s: str) -> str:
    from pylatexenc import latex2text

    text = latex2text.LatexNodes2Text().latex_to_text(s)
    for a, b in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        text = text.replace(a, b)
    return text.strip()


def normalize_answer(answer: str | None) -> str | None:
    """The broad normalisation: words, units, LaTeX rendered to text, spaces/braces removed, lower-cased."""
    if answer is None:
        return None
    s = answer.strip()
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = s.replace("\\%", "").replace("\\$", "").replace("$", "").replace("%", "")
    s = s.replace(" or ", " , ").replace(" and ", " , ")
    for word, power in _SCALE.items():
        s = s.replace(word, power)
    s = _UNIT_RE.sub("", s)
    s = re.sub(r"\^ *\\circ", "", s)
    if len(s) > 1 and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    if re.fullmatch(r"-?\d+\.0*", s.strip()):
        s = s.strip().split(".")[0]
    if "\\" in s:
        try:
            s = _latex_to_text(s)
        except Exception:  # pylatexenc is permissive; a failure keeps the raw string
            pass
    s = s.replace("- ", "-")
    s = re.sub(r"(\d+)\s+(\d+)/(\d+)", r"\1+\2/\3", s)
    s = s.replace(" ", "").replace("{", "").replace("}", "")
    s = s.lower()
    if re.fullmatch(r"-?[\d,]+", s) and "," in s:
        digits = s.replace(",", "")
        if re.fullmatch(r"-?\d+", digits):
            s = str(int(digits))
    elif re.fullmatch(r"-?\d+", s):
        s = str(int(s))
    return s

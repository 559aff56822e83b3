"""Child-process side of the grading worker: evaluates one check per message, in its main thread."""

from __future__ import annotations

import json
import re
import sys

_LETTER = re.compile(r"[a-zA-Z]")


def sympy_equal(truth: str, given: str) -> bool:
    """``simplify((truth) - (given)) == 0`` with implicit multiplication; refuses risky inputs."""
    from sympy import simplify
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    expr = f"({truth})-({given})"
    letters = set(_LETTER.findall(expr.replace("sqrt", "").replace("frac", "")))
    if len(letters) > 2:
        return False
    if "^{" in expr or "^(" in expr or re.search(r"\^[0-9]+\^", expr) or re.search(r"\^[0-9][0-9]+", expr):
        return False  # towers and big powers can hang or blow up sympy
    parsed = parse_expr(
        expr.replace("^", "**"), transformations=(*standard_transformations, implicit_multiplication_application)
    )
    return bool(simplify(parsed) == 0)


def math_verify_equal(truth: str, given: str) -> bool:
    from math_verify import parse, verify

    def wrap(s: str) -> str:
        return s if s.startswith("$") or s.endswith("$") else f"${s}$"

    return bool(verify(parse(wrap(truth)), parse(wrap(given))))


CHECKS = {"sympy": sympy_equal, "math_verify": math_verify_equal}


def serve() -> None:
    """One JSON request per line on stdin (``[kind, truth, given]``), one JSON answer per line on stdout."""
    for line in sys.stdin:
        try:
            kind, truth, given = json.loads(line)
            answer: dict[str, object] = {"ok": True, "equal": CHECKS[kind](truth, given)}
        except Exception as exc:  # any failure of the check is "not equal", reported as such
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()

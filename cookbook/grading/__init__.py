"""Math answer grading: boxed-answer extraction, normalisation, and equivalence with hard time limits.

* :func:`extract_boxed` — the last ``\\boxed{...}`` of a response (brace-matched).
* :func:`normalize_mathd` / :func:`normalize_answer` — the two string normalisations tinker-cookbook applies.
* :func:`grade_answer` — string checks, then tuple/interval splitting, then sympy (``grader="sympy"``) or
  math-verify (``grader="math_verify"``), each run in a worker *process* that is killed when it exceeds the
  time limit (a hung sympy call cannot block the caller).
"""

from cookbook.grading.extract import extract_boxed, extract_gsm8k_answer, last_integer
from cookbook.grading.grade import grade_answer, safe_grade
from cookbook.grading.normalize import normalize_answer, normalize_mathd

__all__ = [
    "extract_boxed",
    "extract_gsm8k_answer",
    "grade_answer",
    "last_integer",
    "normalize_answer",
    "normalize_mathd",
    "safe_grade",
]

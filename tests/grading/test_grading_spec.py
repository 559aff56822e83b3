"""Math grading against specs/grading/math.yaml (hand-judged cases) and the hard time limit."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from cookbook.data import specs_dir
from cookbook.errors import ConfigurationError, DataError
from cookbook.grading import extract_boxed, extract_gsm8k_answer, grade_answer, last_integer, safe_grade
from cookbook.grading.grade import _WORKER

SPEC: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    specs_dir("grading", "math.yaml").read_text()
)


def _ids(section: str) -> list[Any]:
    return [pytest.param(c, id=c["id"]) for c in SPEC[section]]


@pytest.mark.parametrize("case", _ids("extract_boxed"))
def test_extract_boxed(case: dict[str, Any]) -> None:
    if "raises" in case:
        with pytest.raises(DataError, match=case["raises"]):
            extract_boxed(case["text"])
    else:
        assert extract_boxed(case["text"]) == case["expect"]


@pytest.mark.parametrize("case", _ids("gsm8k"))
def test_gsm8k(case: dict[str, Any]) -> None:
    if "raises" in case:
        with pytest.raises(DataError, match=re.escape(case["raises"])):
            extract_gsm8k_answer(case["solution"])
    else:
        assert extract_gsm8k_answer(case["solution"]) == case["expect"]


@pytest.mark.parametrize("case", _ids("last_integer"))
def test_last_integer(case: dict[str, Any]) -> None:
    assert last_integer(case["text"]) == case["expect"]


@pytest.mark.parametrize("case", _ids("grade"))
def test_grade_sympy(case: dict[str, Any]) -> None:
    assert grade_answer(case["given"], case["truth"]) is case["expect"]
    assert safe_grade(case["given"], case["truth"]) is case["expect"]


@pytest.mark.parametrize("case", _ids("math_verify"))
def test_grade_math_verify(case: dict[str, Any]) -> None:
    assert grade_answer(case["given"], case["truth"], grader="math_verify", timeout=5.0) is case["expect"]


def test_unknown_grader() -> None:
    with pytest.raises(ConfigurationError, match="unknown grader"):
        grade_answer("1", "1", grader="nope")  # type: ignore[arg-type]


def test_time_limit_kills_and_replaces_the_worker() -> None:
    assert _WORKER.call("sympy", ("x**2+2*x+1", "(x+1)**2"), 30.0) is True  # warm
    # far below what simplify needs: the check is abandoned and the worker process killed
    assert _WORKER.call("sympy", ("(x+1)**40-(x-1)**40", "x"), 1e-4) is None
    assert _WORKER._proc is None
    # the next check starts a fresh worker and works
    assert _WORKER.call("sympy", ("x**2+2*x+1", "(x+1)**2"), 30.0) is True

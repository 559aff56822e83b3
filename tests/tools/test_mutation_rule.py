"""tools/mutation.py's rule for mutants that only change error text (they do not count in the score)."""

from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "tools" / "mutation.py"
_spec = importlib.util.spec_from_file_location("mutation_tool", _PATH)
assert _spec and _spec.loader
mutation = importlib.util.module_from_spec(_spec)
sys.modules["mutation_tool"] = mutation  # dataclasses look their module up
_spec.loader.exec_module(mutation)

MODULE = textwrap.dedent(
    '''
    def _array(x, name):
        if x is None:
            raise ValueError(f"{name}: expected numbers")
        return x

    def _pair(a, b, names):
        for label, v in zip((names[0], "b"), (a, b)):
            if v is None:
                raise ValueError(f"{label} missing")
        return a

    def f(x, kind, i=None):
        where = f"group {i}" if i is not None else "rewards"
        arr = _array(x, "x")
        if kind == "ipo":
            return arr * 2
        if arr < 0:
            raise ValueError(f"{where}: negative, got {arr!r}")
        return _pair(arr, arr, ("first", "second"))
    '''
)


def _classify(mutant_body_of_f: str) -> bool:
    tree = ast.parse(MODULE)
    params = mutation.error_text_parameters(tree)
    orig = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "f")
    mutant = ast.parse(textwrap.dedent(mutant_body_of_f)).body[0]
    regions = mutation._error_regions(orig, params)
    return mutation._differs_only_in_error_text(
        ast.Module(body=list(orig.body), type_ignores=[]), ast.Module(body=list(mutant.body), type_ignores=[]), regions
    )


def _mutate(old: str, new: str) -> str:
    src = MODULE[MODULE.index("def f("):]
    assert old in src
    return src.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('f"{where}: negative, got {arr!r}"', 'f"XX{where}: negative, got {arr!r}XX"'),  # raise message
        ('f"{where}: negative, got {arr!r}"', "None"),
        ('_array(x, "x")', '_array(x, "XXxXX")'),  # a parameter only used to word errors
        ('_array(x, "x")', "_array(x, None)"),
        ('else "rewards"', 'else "REWARDS"'),  # a local only used in a raise
        ('("first", "second")', '("FIRST", "second")'),  # names[0] reaches only a loop label
    ],
)
def test_error_text_mutants_are_recognised(old: str, new: str) -> None:
    assert _classify(_mutate(old, new))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('kind == "ipo"', 'kind == "XXipoXX"'),  # a string that steers behaviour
        ("arr < 0", "arr <= 0"),
        ("return arr * 2", "return arr * 3"),
        ('_array(x, "x")', '_array(None, "x")'),  # the value argument, not the name
    ],
)
def test_behaviour_mutants_count(old: str, new: str) -> None:
    assert not _classify(_mutate(old, new))


def test_identical_code_is_not_a_mutant() -> None:
    assert not _classify(MODULE[MODULE.index("def f("):])

"""Every math spec case separates the right formula from its common wrong variants.

``formula_variants.py`` transcribes each quantity's formula (independently of ``cookbook``) with one
switch per plausible mistake. Three checks:

* the right transcription reproduces every case's ``expected`` (so the transcription is the spec's
  formula, and a variant differs from it by its one mistake only);
* on every case a variant applies to (the case has the feature the mistake is about), the variant's
  answer differs from ``expected`` beyond the case's tolerance: a conformance run would fail it;
* every variant applies to, and is separated by, at least one case.

Expected values stay hand derivations in the YAML; nothing here writes them.
"""

from __future__ import annotations

import inspect

import pytest
from formula_variants import Family, families

from cookbook.conformance.math_runner import QUANTITIES, Case, compare, load_cases

# the CISPO defaults the spec relies on are whatever the reference documents (Tinker's docs are moving
# from PPO's 0.8 / 1.2 to a one-sided 0.0 / 4.0); the cases' expected values pin them independently
_CISPO_SIGNATURE = inspect.signature(__import__("cookbook.losses", fromlist=["cispo"]).cispo).parameters
CISPO_DEFAULTS = (float(_CISPO_SIGNATURE["clip_low_threshold"].default), float(_CISPO_SIGNATURE["clip_high_threshold"].default))

FAMILIES = families(CISPO_DEFAULTS)
CASES = [c for c in load_cases() if c.quantity in FAMILIES and "raises" not in c.expected]


def _run(fn, case: Case) -> dict:
    return fn(**case.inputs, **case.config)


def _mismatch(case: Case, got: dict) -> str | None:
    for key, exp in case.expected.items():
        if key == "message_contains":
            continue
        if key not in got:
            return f"no {key!r}"
        msg = compare(exp, got[key], case.rtol, case.atol)
        if msg:
            return f"{key}: {msg}"
    return None


def test_quantities_without_variants_are_known() -> None:
    """The quantities not transcribed here are lookups or one-liners whose cases test conventions."""
    assert set(QUANTITIES) - set(FAMILIES) <= {
        "filter_constant_reward_groups", "lr_multiplier", "lora_lr", "weighted_mean_nll", "bits_per_byte",
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.quantity}:{c.id}")
def test_right_formula_reproduces_expected(case: Case) -> None:
    msg = _mismatch(case, _run(FAMILIES[case.quantity].right, case))
    assert msg is None, f"the transcription of {case.quantity} disagrees with the spec: {msg}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.quantity}:{c.id}")
def test_case_separates_every_applicable_variant(case: Case) -> None:
    family: Family = FAMILIES[case.quantity]
    agree = []
    for name, (variant, fn) in family.variants.items():
        if not _applies(variant, case):
            continue
        try:
            got = _run(fn, case)
        except (ZeroDivisionError, ValueError, FloatingPointError):
            continue  # the mistake cannot even compute this case: a conformance run fails it too
        if _mismatch(case, got) is None:
            agree.append(f"{name} ({variant.description})" if variant.description else name)
    assert not agree, f"{case.file}:{case.id} does not separate the right formula from: {agree}"


@pytest.mark.parametrize("quantity", sorted(FAMILIES))
def test_every_variant_is_separated_by_some_case(quantity: str) -> None:
    family = FAMILIES[quantity]
    cases = [c for c in CASES if c.quantity == quantity]
    missing = []
    for name, (variant, fn) in family.variants.items():
        hits = [c.id for c in cases if _applies(variant, c) and _mismatch(c, _safe(fn, c)) is not None]
        if not hits:
            missing.append(name)
    assert not missing, f"{quantity}: no case separates {missing}"


def _applies(variant, case: Case) -> bool:
    if variant.outputs and not any(o in case.expected for o in variant.outputs):
        return False
    return bool(variant.applies(case.inputs, case.config))


def _safe(fn, case: Case) -> dict:
    try:
        return _run(fn, case)
    except (ZeroDivisionError, ValueError, FloatingPointError):
        return {}

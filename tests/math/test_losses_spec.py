"""Every math spec case passes against the reference implementation (and through tinker_loss)."""

from __future__ import annotations

import math

import pytest

from cookbook.conformance.math_runner import QUANTITIES, load_callable, load_cases, run_case
from cookbook.errors import LossInputError

CASES = load_cases()
LOSS_CASES = [c for c in CASES if QUANTITIES[c.quantity].kind == "loss"]


def test_every_quantity_has_cases() -> None:
    assert {c.quantity for c in CASES} == set(QUANTITIES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.quantity}:{c.id}")
def test_reference_passes_spec(case) -> None:
    q = QUANTITIES[case.quantity]
    results = run_case(q, case, load_callable(q.reference))
    assert results, "a case must produce at least one check"
    failures = [f"{r.check}: {r.message}" for r in results if r.status != "PASS"]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: f"{c.quantity}:{c.id}")
def test_tinker_dispatcher_passes_loss_specs(case) -> None:
    """The mock server's entry point gives the same answers as the per-loss functions."""
    from cookbook.losses import tinker_loss

    results = run_case(QUANTITIES[case.quantity], case, tinker_loss, signature="tinker")
    failures = [f"{r.check}: {r.message}" for r in results if r.status != "PASS"]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", [c for c in CASES if "raises" in c.expected], ids=lambda c: f"{c.quantity}:{c.id}")
def test_reference_errors_are_cookbook_errors(case) -> None:
    """The reference raises the project's own error classes (which subclass ValueError)."""
    from cookbook.errors import CookbookError

    q = QUANTITIES[case.quantity]
    with pytest.raises(CookbookError):
        load_callable(q.reference)(**case.inputs, **case.config)


def test_loss_errors_are_loss_input_errors() -> None:
    for case in LOSS_CASES:
        if "raises" in case.expected:
            q = QUANTITIES[case.quantity]
            with pytest.raises(LossInputError):
                load_callable(q.reference)(**case.inputs, **case.config)


def test_spec_hygiene() -> None:
    """Each case explains itself; each file covers the issue's edge cases."""
    for c in CASES:
        assert c.description.strip(), c.id
        assert c.derivation.strip(), f"{c.file}:{c.id} has no derivation"
    ids = {c.quantity: {x.id for x in CASES if x.quantity == c.quantity} for c in CASES}
    assert any("empty" in i for i in ids["ppo"]) and any("boundary" in i for i in ids["ppo"])
    assert any("near-zero" in i for i in ids["ppo"]) and any("very-large" in i for i in ids["ppo"])
    assert "ppo-negative-adv-both-sides" in ids["ppo"]
    assert "ce-all-zero-weights" in ids["cross_entropy"]
    assert "grpo-group-of-one" in ids["grpo_advantages"] and "grpo-all-equal" in ids["grpo_advantages"]
    assert "gspo-empty-mask" in ids["gspo"]


def test_expected_values_have_enough_precision() -> None:
    """Literal decimal expectations are exact (short) or carry >= 12 significant digits."""
    import yaml

    from cookbook.conformance.math_runner import default_spec_dir

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from walk(v)
        elif isinstance(x, list):
            for v in x:
                yield from walk(v)
        elif isinstance(x, float) and math.isfinite(x):
            yield x

    for path in default_spec_dir().glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["cases"]:
            for v in walk(case["expected"]):
                digits = repr(v).replace("-", "").replace(".", "").lstrip("0").split("e")[0]
                assert len(digits) <= 6 or len(digits) >= 12, f"{path.name}:{case['id']}: {v!r}"


@pytest.mark.parametrize("quantity", [q.name for q in QUANTITIES.values() if q.kind == "loss" and not q.stop_gradient])
def test_spec_gradients_match_finite_differences(quantity) -> None:
    """Every expected spec gradient equals central finite differences of the loss value (1e-6 relative),
    except at kinks (exact clip boundaries), where the gradient is a documented convention."""
    from cookbook.conformance.math_runner import run_quantity

    reference = load_callable(QUANTITIES[quantity].reference)
    results = run_quantity(quantity, lambda **kw: reference(**kw).loss, signature="value", skip_error_cases=True)
    grad_checks = [r for r in results if r.check == "grad"]
    assert not [r for r in grad_checks if r.status == "FAIL"], [r.message for r in grad_checks if r.status == "FAIL"]
    skipped = {r.case for r in grad_checks if r.status == "SKIP"}
    assert all("boundary" in c or "degenerate" in c for c in skipped), skipped
    assert sum(r.status == "PASS" for r in grad_checks) >= 3

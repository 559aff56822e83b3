"""`cookbook conform math`: the reference passes, deliberately wrong implementations fail readably."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cookbook.cli import main
from cookbook.conformance import math_cli
from cookbook.conformance.math_runner import QUANTITIES, compare, evaluate, load_spec_file, run_quantity
from cookbook.errors import SpecError

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable_wrong_impls(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


def conform(capsys, *args: str) -> tuple[int, str]:
    code = main(["conform", "math", *args])
    return code, capsys.readouterr().out


def test_quantity_list_in_sync() -> None:
    assert set(math_cli.QUANTITY_NAMES) == set(QUANTITIES)


def test_reference_passes_everything(capsys) -> None:
    code, out = conform(capsys, "--reference")
    assert code == 0, out
    assert " 0 failed" in out and "0 errors" in out


@pytest.mark.parametrize(
    ("impl", "signature"),
    [
        ("cookbook.losses:ppo", "kwargs"),
        ("cookbook.losses:tinker_loss", "tinker"),
        ("wrong_impls:ppo_value_only", "value"),
        ("wrong_impls:ppo_positional", "positional"),
    ],
)
def test_correct_ppo_under_every_signature(capsys, impl, signature) -> None:
    extra = ["--skip-error-cases"] if impl.startswith("wrong_impls") else []  # these validate nothing at all
    code, out = conform(capsys, "--impl", impl, "--quantity", "ppo", "--signature", signature, *extra)
    assert code == 0, out
    assert " passed, 0 failed" in out


def test_value_signature_skips_what_the_value_cannot_decide() -> None:
    from wrong_impls import ppo_value_only

    from cookbook.losses import cispo

    results = run_quantity("cispo", lambda **kw: cispo(**kw).loss, signature="value")
    assert {r.status for r in results if r.check == "loss"} == {"PASS"}
    assert {r.status for r in results if r.check == "grad"} == {"SKIP"}  # stop-gradient
    results = run_quantity("ppo", ppo_value_only, signature="value", case_filter="boundary")
    assert {r.status for r in results if r.check == "grad"} == {"SKIP"}  # kink at the clip bound
    results = run_quantity("ppo", ppo_value_only, signature="value", case_filter="both-sides")
    assert {r.status for r in results if r.check == "grad"} == {"PASS"}  # finite differences elsewhere


def test_missing_validation_is_reported(capsys) -> None:
    code, out = conform(capsys, "--impl", "wrong_impls:ppo_positional", "--quantity", "ppo", "--signature", "positional")
    assert code == 1
    assert "ppo-low-above-high" in out and "not refused" in out


def test_correct_ppo_with_its_own_error_types_and_wording_passes_without_flags(capsys) -> None:
    """Refusals are behaviour: any exception meets an expected one; its type and message are shown, not matched."""
    code, out = conform(capsys, "--impl", "wrong_impls:ppo_own_errors", "--quantity", "ppo")
    assert code == 0, out
    assert "refused: RuntimeError: bad clip interval" in out and "refused: AssertionError" in out


def test_impl_is_importable_from_the_current_folder(capsys, monkeypatch, tmp_path) -> None:
    (tmp_path / "mine_ppo.py").write_text((HERE / "wrong_impls.py").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(HERE))])
    code, out = conform(capsys, "--impl", "mine_ppo:ppo_own_errors", "--quantity", "ppo")
    assert code == 0, out


def failing_messages(capsys, impl: str, quantity: str) -> str:
    code, out = conform(capsys, "--impl", impl, "--quantity", quantity)
    assert code == 1, out
    assert " failed" in out and "distinct cause" in out
    return out


def test_mean_instead_of_sum_fails(capsys) -> None:
    out = failing_messages(capsys, "wrong_impls:ppo_mean", "ppo")
    # e.g. ppo-all-inside: expected -1.7, got -0.566666666666667
    assert "ppo-all-inside" in out and "expected -1.7, got -0.566666666666667" in out
    assert "relative error" in out


def test_clip_on_the_wrong_side_fails(capsys) -> None:
    out = failing_messages(capsys, "wrong_impls:ppo_clip_wrong_side", "ppo")
    assert "ppo-positive-adv-above-hi" in out
    assert "ppo-negative-adv-both-sides" in out
    assert "first difference at index 0" in out


def test_cispo_without_stop_gradient_fails_on_the_gradient_only(capsys) -> None:
    out = failing_messages(capsys, "wrong_impls:cispo_no_stop_gradient", "cispo")
    lines = [line.split()[:3] for line in out.splitlines() if line.startswith("cispo-inside-range")]
    assert ["cispo-inside-range", "loss", "PASS"] in lines  # same value ...
    assert ["cispo-inside-range", "grad", "FAIL"] in lines  # ... different gradient
    assert "expected -2.2, got" in out


def test_std_without_bessel_fails(capsys) -> None:
    out = failing_messages(capsys, "wrong_impls:grpo_no_bessel", "grpo_advantages")
    assert "grpo-binary-bessel" in out and "grpo-pair-bessel" in out
    assert "expected -0.707106781186547, got -1 (relative error 4.14e-01)" in out
    # the population-std case still passes: the failure is specific to the declared Bessel correction
    rows = [line.split()[:3] for line in out.splitlines()]
    assert ["grpo-binary-population", "value", "PASS"] in rows
    assert ["grpo-binary-bessel", "value", "FAIL"] in rows


def test_metric_names_need_one_colon(capsys) -> None:
    out = failing_messages(capsys, "wrong_impls:ppo_bad_metric_name", "ppo")
    assert "metric-names" in out and "exactly one ':'" in out


def test_json_and_junit_reports(capsys, tmp_path) -> None:
    junit = tmp_path / "reports" / "math.xml"
    code, out = conform(capsys, "--impl", "wrong_impls:ppo_mean", "--quantity", "ppo", "--json", "--junit", str(junit))
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["impl"] == "wrong_impls:ppo_mean"
    assert any(r["status"] == "FAIL" and r["case"] == "ppo-all-inside" for r in report["results"])
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) > 0
    assert any(tc.find("failure") is not None for tc in suite.iter("testcase"))


def test_usage_errors(capsys) -> None:
    assert main(["conform", "math", "--impl", "wrong_impls:ppo_mean"]) == 2  # no --quantity
    assert main(["conform", "math", "--impl", "no_such_module:f", "--quantity", "ppo"]) == 2
    assert main(["conform", "math", "--impl", "cookbook.rl.kl:k1", "--quantity", "kl_k1", "--signature", "value"]) == 2
    err = capsys.readouterr().err
    assert "--quantity" in err and "no_such_module" in err
    with pytest.raises(SystemExit):
        main(["conform", "math", "--impl", "x:y", "--quantity", "not_a_quantity"])


def test_case_filter(capsys) -> None:
    code, out = conform(capsys, "--reference", "--quantity", "ppo", "--case", "boundary")
    assert code == 0 and "ppo-boundary-hi-exact" in out and "ppo-all-inside" not in out


def test_expression_evaluator() -> None:
    assert evaluate("-3/5*ln(3/2)") == pytest.approx(-0.6 * 0.4054651081081644, rel=1e-15)
    assert evaluate("2**-1 + sqrt(4)") == 2.5
    for bad in ("__import__('os')", "x + 1", "ln(1, 2)", "1 +"):
        with pytest.raises(SpecError):
            evaluate(bad)


def test_compare_messages() -> None:
    assert compare([1.0, 2.0], [1.0, 2.0], 1e-12, 0) is None
    assert "first difference at index 1" in (compare([1.0, 2.0], [1.0, 2.5], 1e-12, 0) or "")
    assert "shape mismatch" in (compare([1.0, 2.0], [1.0], 1e-12, 0) or "")
    assert "missing key" in (compare({"loss:sum": 1.0}, {}, 1e-12, 0) or "")
    assert compare(float("nan"), float("nan"), 1e-12, 0) is None


def test_malformed_spec_files(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("quantity: ppo\ncases:\n  - id: a\n    description: x\n    expected: {loss: 1, foo: 2}\n")
    with pytest.raises(SpecError, match="foo"):
        load_spec_file(bad)
    bad.write_text("quantity: nope\ncases:\n  - id: a\n    description: x\n    expected: {loss: 1}\n")
    with pytest.raises(SpecError, match="nope"):
        load_spec_file(bad)
    bad.write_text("cases:\n  - {id: a, quantity: ppo, description: x, expected: {loss: 1}}\n  - {id: a, quantity: ppo, description: y, expected: {loss: 1}}\n")
    with pytest.raises(SpecError, match="duplicate"):
        load_spec_file(bad)

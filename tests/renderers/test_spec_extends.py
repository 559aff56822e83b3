"""``extends:``: a variant spec inherits its parent's fields, deviations, cases and parse cases."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookbook.conformance.spec import all_spec_paths, load_spec
from cookbook.errors import SpecError

PARENT: dict[str, Any] = {
    "renderer": "toy",
    "title": "Toy",
    "tokenizer": "meta-llama/Llama-3.1-8B-Instruct",
    "oracle": {"kind": "chat_template", "template_kwargs": {"a": 1, "b": 2}},
    "claims": {"thinking": False, "tools": False},
    "stop_sequences": ["<|eot_id|>"],
    "deviations": [
        {"id": "d1", "description": "one", "reason": "r1"},
        {"id": "d2", "description": "two", "reason": "r2"},
    ],
    "cases": [
        {
            "id": "user_only",
            "scenario": "user_only",
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
            "deviations": ["d1"],
            "expect": {"supervised": "Hi⟦Yo⟧", "generation_prompt": "Hi"},
        },
        {
            "id": "multi_turn",
            "scenario": "multi_turn",
            "messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}],
            "expect": {"supervised": "A⟦B⟧"},
        },
    ],
    "parse": [
        {"id": "clean_stop", "response": "x<|eot_id|>", "expect": {"termination": "stop_sequence"}},
        {"id": "truncated", "response": "x", "expect": {"termination": "malformed"}},
    ],
}


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return p


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    return write(tmp_path, "toy", PARENT)


def test_a_child_inherits_everything_it_does_not_state(parent: Path) -> None:
    child = load_spec(write(parent.parent, "toy_v", {"extends": "toy.yaml", "renderer": "toy_v"}))
    base = load_spec(parent)
    assert child.renderer == "toy_v" and child.title == "toy_v"  # never the parent's title
    assert child.tokenizer == base.tokenizer and child.oracle == base.oracle and child.claims == base.claims
    assert child.stop_sequences == base.stop_sequences
    assert child.deviations == base.deviations and child.cases == base.cases and child.parse == base.parse
    assert child.sha256 != base.sha256


def test_mappings_merge_and_null_removes(parent: Path) -> None:
    child = load_spec(
        write(
            parent.parent,
            "toy_v",
            {
                "extends": "toy.yaml",
                "renderer": "toy_v",
                "oracle": {"template_kwargs": {"b": None, "c": 3}},
                "claims": {"thinking": True},
                "cases": [{"id": "user_only", "expect": {"generation_prompt": None, "supervised": "Hi⟦Yo!⟧"}}],
            },
        )
    )
    assert dict(child.oracle.template_kwargs) == {"a": 1, "c": 3}
    assert child.claims == {"thinking": True, "tools": False}
    case = child.case("user_only")
    assert case.expect.generation_prompt is None and case.expect.supervised == "Hi⟦Yo!⟧"
    assert case.messages == load_spec(parent).case("user_only").messages and case.deviations == ("d1",)


def test_entries_are_overridden_added_and_removed_by_id(parent: Path) -> None:
    child = load_spec(
        write(
            parent.parent,
            "toy_v",
            {
                "extends": "toy.yaml",
                "renderer": "toy_v",
                "remove_deviations": ["d2"],
                "deviations": [{"id": "d1", "reason": "other"}, {"id": "d3", "description": "three", "reason": "r3"}],
                "remove_cases": ["multi_turn"],
                "cases": [
                    {
                        "id": "system_user",
                        "scenario": "system_user",
                        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                        "expect": {"generation_prompt": "SU"},
                    }
                ],
                "remove_parse": ["truncated"],
                "parse": [{"id": "clean_stop", "expect": {"termination": None, "raises": "x"}}],
            },
        )
    )
    assert list(child.deviations) == ["d1", "d3"]
    assert child.deviations["d1"].reason == "other" and child.deviations["d1"].description == "one"
    assert [c.id for c in child.cases] == ["user_only", "system_user"]
    assert [p.id for p in child.parse] == ["clean_stop"]
    assert child.parse[0].expect.raises == "x" and child.parse[0].expect.termination is None


def test_chains_resolve_and_cycles_are_refused(parent: Path) -> None:
    folder = parent.parent
    write(folder, "toy_v", {"extends": "toy.yaml", "renderer": "toy_v", "claims": {"tools": True}})
    grandchild = load_spec(write(folder, "toy_w", {"extends": "toy_v.yaml", "renderer": "toy_w"}))
    assert grandchild.claims == {"thinking": False, "tools": True}
    write(folder, "loop_a", {"extends": "loop_b.yaml", "renderer": "loop_a"})
    write(folder, "loop_b", {"extends": "loop_a.yaml", "renderer": "loop_b"})
    with pytest.raises(SpecError, match="cycle"):
        load_spec(folder / "loop_a.yaml")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"extends": "missing.yaml"}, "extends"),
        ({"remove_cases": ["no_such_case"]}, "remove_cases"),
        ({"cases": [{"scenario": "user_only"}]}, "cases"),
        ({"renderer": None}, "renderer"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_extensions_name_the_child_and_the_field(parent: Path, change: dict[str, Any], field: str) -> None:
    doc = {"extends": "toy.yaml", "renderer": "toy_v", **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    path = write(parent.parent, "toy_v", doc)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "toy_v.yaml" in str(info.value) and field in str(info.value)


def test_remove_keys_need_extends(parent: Path) -> None:
    doc = copy.deepcopy(PARENT)
    doc["remove_cases"] = ["multi_turn"]
    with pytest.raises(SpecError, match="extends"):
        load_spec(write(parent.parent, "toy", doc))


def test_a_merged_case_is_validated_like_any_case(parent: Path) -> None:
    path = write(
        parent.parent, "toy_v", {"extends": "toy.yaml", "renderer": "toy_v", "cases": [{"id": "user_only", "expect": {"raises": "x"}}]}
    )
    with pytest.raises(SpecError, match="either raises or supervised"):
        load_spec(path)


def test_the_repo_variants_extend_their_parents() -> None:
    """Variant specs state only what differs: each extends its family's spec and is shorter than it (unless its
    oracle is another kind than its parent's, e.g. tml-renderers' Qwen38 under the Qwen3.5 template: then nearly
    every expected text differs and is restated)."""
    variants = {p.stem: p for p in all_spec_paths() if "extends:" in p.read_text(encoding="utf-8")}
    assert {"deepseekv3_disable_thinking", "qwen3_disable_thinking", "gpt_oss_low_reasoning", "kimi_k2_thinking"} <= set(variants)
    for name, path in variants.items():
        parent = path.parent / yaml.safe_load(path.read_text(encoding="utf-8"))["extends"]
        spec = load_spec(path)
        assert spec.renderer == name
        if spec.oracle.kind == load_spec(parent).oracle.kind:
            assert len(path.read_text(encoding="utf-8")) < len(parent.read_text(encoding="utf-8")), name

"""Spec loading and validation, ⟦ ⟧ marks, message conversions and template edits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cookbook.conformance.spec import (
    Deviation,
    Edit,
    MessageOptions,
    all_spec_paths,
    apply_edits,
    load_spec,
    mark,
    parse_marked,
    to_message,
    to_template_message,
    to_template_tools,
)
from cookbook.errors import SpecError
from cookbook.renderers.base import ToolCall, TrainOnWhat

MINIMAL = {
    "renderer": "toy",
    "tokenizer": "meta-llama/Llama-3.1-8B-Instruct",
    "oracle": {"kind": "chat_template"},
    "deviations": [{"id": "d1", "description": "x", "reason": "y", "template_edits": [{"replace": "a", "with": "b"}]}],
    "cases": [
        {
            "id": "user_only",
            "scenario": "user_only",
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
            "expect": {"supervised": "Hi⟦Yo⟧", "generation_prompt": "Hi"},
        }
    ],
}


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "toy.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


def _mutated(**case_changes: object) -> dict:
    import copy

    doc = copy.deepcopy(MINIMAL)
    doc["cases"][0].update(case_changes)
    return doc


@pytest.mark.parametrize("path", all_spec_paths(), ids=lambda p: p.stem)
def test_every_spec_in_the_repo_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.renderer == path.stem, "a spec file is named after its renderer"
    assert spec.cases, "a spec has cases"
    assert len(spec.sha256) == 64


def test_minimal_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, MINIMAL))
    case = spec.case("user_only")
    assert case.train_on_what is TrainOnWhat.LAST_ASSISTANT_MESSAGE
    assert case.expect.supervised_text == "HiYo"
    assert case.expect.supervised_spans == [(2, 4)]
    assert [m["role"] for m in case.prompt_messages] == ["user"]


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"scenario": "nope"}, "scenario", "unknown scenario 'nope'"),
        ({"train_on_what": "everything"}, "train_on_what", "unknown value 'everything'"),
        ({"deviations": ["missing"]}, "deviations", "unknown deviation 'missing'"),
        ({"expect": {}}, "expect", "needs supervised and/or generation_prompt"),
        ({"expect": {"supervised": "a⟦b"}}, "expect.supervised", "never closed"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "content must be"),
        ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": "{bad"}]}]},
         "messages[0].tool_calls[0].arguments", "JSON"),
        ({"prefill": "zz"}, "expect.generation_prompt", "must end with the prefill"),
        ({"template": {"skip": ""}}, "template.skip", "needs a reason"),
        ({"colour": "red"}, None, "unknown field(s) ['colour']"),
    ],
)
def test_spec_errors_name_file_case_and_field(tmp_path: Path, change: dict, field: str | None, needle: str) -> None:
    p = _write(tmp_path, _mutated(**change))
    with pytest.raises(SpecError) as info:
        load_spec(p)
    msg = str(info.value)
    assert str(p) in msg
    assert "case 'user_only'" in msg
    if field is not None:
        assert f"field '{field}'" in msg
    assert needle in msg


def test_top_level_errors(tmp_path: Path) -> None:
    import copy

    doc = copy.deepcopy(MINIMAL)
    doc["oracle"] = {"kind": "spec"}
    with pytest.raises(SpecError, match=r"field 'oracle.reason'.*required when oracle.kind is spec"):
        load_spec(_write(tmp_path, doc))
    doc = copy.deepcopy(MINIMAL)
    doc["cases"].append(doc["cases"][0])
    with pytest.raises(SpecError, match="duplicate case id"):
        load_spec(_write(tmp_path, doc))
    doc = copy.deepcopy(MINIMAL)
    doc["deviations"][0]["template_edits"] = [{"regex": "(", "with": ""}]
    with pytest.raises(SpecError, match=r"deviations\[d1\]\.template_edits\[0\].*invalid regex"):
        load_spec(_write(tmp_path, doc))
    (tmp_path / "bad.yaml").write_text("renderer: [unclosed", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")


def test_marks() -> None:
    assert parse_marked("a⟦bc⟧d⟦e⟧") == ("abcde", [(1, 3), (4, 5)])
    assert parse_marked("⟦ab⟧⟦cd⟧") == ("abcd", [(0, 4)]), "touching spans merge"
    assert parse_marked("x⟦⟧y") == ("xy", [])
    for bad in ("⟦a⟦b⟧⟧", "a⟧", "⟦a"):
        with pytest.raises(SpecError):
            parse_marked(bad)
    text, spans = parse_marked("héllo ⟦wörld 👋⟧!")
    assert mark(text, spans) == "héllo ⟦wörld 👋⟧!"


def test_to_message_builds_cookbook_messages() -> None:
    m = to_message(
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"}],
            "tool_calls": [{"id": "c1", "name": "f", "arguments": '{"x": 1}'}, {"name": "g", "arguments": {"y": True}}],
        }
    )
    assert m["content"] == [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"}]
    assert m["tool_calls"] == [ToolCall("f", '{"x": 1}', "c1"), ToolCall("g", '{"y": true}', None)]
    tool = to_message({"role": "tool", "content": "21", "tool_call_id": "c1", "name": "f"})
    assert tool == {"role": "tool", "content": "21", "tool_call_id": "c1", "name": "f"}


def test_to_template_message_thinking_and_tool_calls() -> None:
    raw = {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"}],
        "tool_calls": [{"id": "c1", "name": "f", "arguments": '{"x": 1}'}],
        "trainable": True,
    }
    rc = to_template_message(raw, MessageOptions(thinking="reasoning_content"))
    assert rc == {
        "role": "assistant",
        "content": "ok",
        "reasoning_content": "hmm",
        "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}],
    }
    tags = to_template_message(raw, MessageOptions(thinking="content_tags", tool_arguments="string"))
    assert tags["content"] == "<think>\nhmm\n</think>\n\nok"
    assert "reasoning_content" not in tags
    assert tags["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    dropped = to_template_message(raw, MessageOptions(thinking="drop"))
    assert dropped["content"] == "ok" and "reasoning_content" not in dropped
    assert "trainable" not in rc
    tools = [{"name": "f", "description": "d", "parameters": {}}]
    assert to_template_tools(tools) == [{"type": "function", "function": tools[0]}]
    assert to_template_tools(tools, MessageOptions(tools="raw")) == tools


def test_apply_edits() -> None:
    dev = Deviation("d", "", "", (Edit("replace", "a", "b"), Edit("regex", r"x+", "y")))
    assert apply_edits(["aaxx", "zz"], [dev]) == ["bby", "zz"]
    with pytest.raises(SpecError, match=r"deviation 'd'.*matched nothing"):
        apply_edits(["zzz"], [dev], where="here: ")
    assert apply_edits(["zzz"], [dev], strict=False) == ["zzz"]
    opt = Deviation("o", "", "", (Edit("replace", "q", "r", optional=True),))
    assert apply_edits(["zzz"], [opt]) == ["zzz"]
    # regex replacements are literal text (no group references)
    lit = Deviation("l", "", "", (Edit("regex", "a", r"\1"),))
    assert apply_edits(["a"], [lit]) == [r"\1"]
    # unless the edit says groups: true
    grp = Deviation("g", "", "", (Edit("regex", r"(a)(b)", r"\2-\1", groups=True),))
    assert apply_edits(["xaby"], [grp]) == ["xb-ay"]


def test_group_edits_are_validated(tmp_path: Path) -> None:
    import copy

    doc = copy.deepcopy(MINIMAL)
    doc["deviations"][0]["template_edits"] = [{"regex": "(a)", "with": "\\1\\1", "groups": True}]
    assert load_spec(_write(tmp_path, doc)).deviations["d1"].template_edits[0].groups
    for bad in ({"regex": "(a)", "with": "\\2", "groups": True}, {"replace": "a", "with": "b", "groups": True},
                {"regex": "a", "with": "b", "groups": "yes"}):
        doc["deviations"][0]["template_edits"] = [bad]
        with pytest.raises(SpecError, match=r"template_edits\[0\]"):
            load_spec(_write(tmp_path, doc))


def test_property_inputs_are_validated_and_merged(tmp_path: Path) -> None:
    import copy

    doc = copy.deepcopy(MINIMAL)
    doc["deviations"][0]["property_inputs"] = {"strip_whitespace": True, "forbid": ["@@"]}
    doc["deviations"].append({"id": "d2", "description": "x", "reason": "y", "property_inputs": {"forbid": ["##"]}, "applies_to": "all"})
    spec = load_spec(_write(tmp_path, doc))
    assert spec.property_inputs() == {"strip_whitespace": True, "forbid": ["@@", "##"]}
    assert [d.id for d in spec.general_deviations()] == ["d2"]
    doc["deviations"][1]["property_inputs"] = {"colour": 1}
    with pytest.raises(SpecError, match="unknown key 'colour'"):
        load_spec(_write(tmp_path, doc))


def test_property_inputs_scope_and_wide_keys(tmp_path: Path) -> None:
    """``scope: template`` keeps a deviation's inputs to the template comparisons; the wide keys are booleans."""
    import copy

    doc = copy.deepcopy(MINIMAL)
    doc["deviations"][0]["property_inputs"] = {"strip_whitespace": True, "empty_system": False, "scope": "template"}
    doc["deviations"].append({"id": "d2", "description": "x", "reason": "y", "property_inputs": {"missing_ids": False}})
    spec = load_spec(_write(tmp_path, doc))
    assert spec.property_inputs() == {"strip_whitespace": True, "empty_system": False, "missing_ids": False}
    assert spec.property_inputs(template=False) == {"missing_ids": False}
    for bad in ({"scope": "everything"}, {"inline_think": "no"}, {"wide_tools": 0}):
        doc["deviations"][1]["property_inputs"] = bad
        with pytest.raises(SpecError):
            load_spec(_write(tmp_path, doc))


def test_case_role(tmp_path: Path) -> None:
    """A case may open another role's turn: it checks a generation prompt only, from all its messages."""
    import copy

    doc = copy.deepcopy(MINIMAL)
    doc["cases"][0] = {"id": "for_user", "scenario": "multi_turn", "role": "user",
                       "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                       "expect": {"generation_prompt": "HiYo"}}
    case = load_spec(_write(tmp_path, doc)).cases[0]
    assert case.role == "user" and len(case.prompt_messages) == 2
    doc["cases"][0]["expect"]["supervised"] = "Hi⟦Yo⟧"
    with pytest.raises(SpecError):
        load_spec(_write(tmp_path, doc))
    doc["cases"][0]["expect"] = {"generation_prompt": "x"}
    doc["cases"][0]["role"] = " "
    with pytest.raises(SpecError):
        load_spec(_write(tmp_path, doc))
    del doc["cases"][0]["role"]
    assert load_spec(_write(tmp_path, doc)).cases[0].prompt_messages == ({"role": "user", "content": "Hi"},)

"""The ``tml:`` section of renderer specs and ``oracle.kind: tml_renderers`` (loader checks; no tml_renderers needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cookbook.conformance.spec import load_spec, spec_path_for
from cookbook.errors import SpecError


def _variant(tmp_path: Path, extra: str, kind: str | None = None) -> Path:
    text = spec_path_for("llama3").read_text(encoding="utf-8")
    if kind is not None:
        text = text.replace("kind: chat_template", f"kind: {kind}", 1)
    p = tmp_path / "llama3.yaml"
    p.write_text(text + "\n" + extra, encoding="utf-8")
    return p


def test_tml_section_loads(tmp_path: Path) -> None:
    spec = load_spec(_variant(tmp_path, "tml:\n  class: Qwen3\n  constructor: instruct\n  differences:\n"
                                        "    - {id: sep, description: d, reason: r, when: [tool_calls]}\n"))
    assert spec.tml is not None and spec.tml.cls == "Qwen3" and spec.tml.constructor == "instruct"
    assert [d.id for d in spec.tml.differences] == ["sep"] and spec.tml.differences[0].when == ("tool_calls",)


def test_unknown_feature_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError):
        load_spec(_variant(tmp_path, "tml:\n  class: Qwen3\n  differences:\n    - {id: x, reason: r, when: [nonsense]}\n"))


def test_tml_oracle_needs_a_tml_section(tmp_path: Path) -> None:
    with pytest.raises(SpecError):
        load_spec(_variant(tmp_path, "", kind="tml_renderers"))
    spec = load_spec(_variant(tmp_path, "tml: {class: Qwen3}\n", kind="tml_renderers"))
    assert spec.oracle.kind == "tml_renderers"


def test_child_spec_can_drop_the_parent_tml() -> None:
    assert load_spec(spec_path_for("gpt_oss_medium_reasoning")).tml is not None
    assert load_spec(spec_path_for("gpt_oss_no_sysprompt")).tml is None

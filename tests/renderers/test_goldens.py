"""Goldens: generated from the oracle, up to date (``cookbook golden --check``), with provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cookbook.cli import main
from cookbook.conformance.golden import dumps, generate_spec, golden_root, load_golden
from cookbook.conformance.spec import all_spec_paths, load_spec
from cookbook.data import specs_dir
from cookbook.errors import SpecError
from cookbook.tokenizers import get_tokenizer

SPECS = all_spec_paths()
LLAMA_SPEC = specs_dir("renderers") / "llama3.yaml"


@pytest.fixture(scope="session")
def llama_tok():  # type: ignore[no-untyped-def]
    return get_tokenizer("meta-llama/Llama-3.1-8B-Instruct")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_golden_check_is_clean(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regenerating the goldens from the oracles changes nothing (and the spec agrees with its oracle): what
    `cookbook golden --check` does for every spec, one spec per test so that ``pytest -n`` shares the work out
    (the whole check in one test was the suite's longest single test)."""
    rc = main(["golden", "--check", load_spec(path).renderer])
    out, err = capsys.readouterr()
    assert rc == 0, f"`cookbook golden --check` wants changes: run `nox -s golden` and review\n{out}\n{err}"


def test_every_golden_folder_belongs_to_a_spec() -> None:
    """`cookbook golden --check` per spec cannot see a golden folder that no spec owns: none may exist."""
    renderers = {load_spec(p).renderer for p in SPECS}
    folders = {d.name for d in golden_root().iterdir() if d.is_dir()}
    assert folders <= renderers, f"golden folders without a spec: {sorted(folders - renderers)}"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_golden_has_provenance(path: Path) -> None:
    spec = load_spec(path)
    for case in spec.cases:
        g = load_golden(spec.renderer, case.id)
        assert g is not None, f"{spec.renderer}/{case.id}: no golden; run `cookbook golden {spec.renderer}`"
        prov = g["provenance"]
        for key in ("tokenizer_sha256", "template_sha256", "tokenizer_source", "versions", "spec_sha256", "generator"):
            assert key in prov, f"{spec.renderer}/{case.id}: provenance lacks {key}"
        assert len(prov["tokenizer_sha256"]) == 64
        assert set(prov["versions"]) == {"transformers", "tokenizers", "jinja2"}
        assert prov["spec_sha256"] == spec.sha256
        assert g["oracle"] in ("chat_template", "spec", "tml_renderers")
        if g["oracle"] == "tml_renderers":  # the official renderer's ids, weights and stop values, with its version
            assert spec.oracle.kind == "tml_renderers" and case.template_skip is None
            assert prov.get("tml_renderer") and prov.get("tml_renderers_version")
            assert "stop" in g
        if spec.oracle.kind == "tml_renderers" and case.template_skip is None and case.expect.raises is None:
            assert g["oracle"] == "tml_renderers", f"{case.id}: a tml spec's golden must come from tml-renderers"
        if g["oracle"] == "spec":
            assert g.get("oracle_reason"), "a spec-oracle golden says why"
        if spec.oracle.kind == "chat_template" and case.template_skip is None and case.expect.raises is None:
            assert g["oracle"] == "chat_template", f"{case.id}: a template spec's golden must come from the template"
            assert len(prov["template_sha256"]) == 64


def test_goldens_are_deterministic_files() -> None:
    for p in sorted(golden_root().rglob("*.json")):
        text = p.read_text(encoding="utf-8")
        assert text == dumps(json.loads(text)), f"{p} is not in the generator's canonical format"
        assert "timestamp" not in text and "date_generated" not in text


def test_template_goldens_come_from_the_template(llama_tok) -> None:  # type: ignore[no-untyped-def]
    """An independent re-derivation of one golden straight from apply_chat_template (no cookbook code)."""
    g = load_golden("llama3", "system_user")
    assert g is not None
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = llama_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, date_string="26 Jul 2024")
    text = text.replace("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", "")
    assert g["generation_prompt"]["text"] == text
    assert g["generation_prompt"]["tokens"] == llama_tok.encode(text, add_special_tokens=False)


def _spec_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = LLAMA_SPEC.read_text(encoding="utf-8")
    assert old in text
    p = tmp_path / "llama3.yaml"
    p.write_text(text.replace(old, new, 1), encoding="utf-8")
    return p


def test_spec_that_disagrees_with_the_oracle_is_reported_with_a_diff(tmp_path: Path, llama_tok) -> None:  # type: ignore[no-untyped-def]
    p = _spec_copy(tmp_path, "⟦Hello!<|eot_id|>⟧", "⟦Hello!!<|eot_id|>⟧")
    gs = generate_spec(load_spec(p), llama_tok, root=tmp_path / "out")
    assert len(gs.mismatches) == 1
    msg = gs.mismatches[0]
    assert "case 'user_only'" in msg and "supervised" in msg and "deviation is undeclared" in msg
    assert "-Hello!!<|eot_id|>" in msg and "+Hello!<|eot_id|>" in msg


def test_stale_template_edit_stops_the_generator(tmp_path: Path, llama_tok) -> None:  # type: ignore[no-untyped-def]
    p = _spec_copy(tmp_path, '{replace: "\\n\\npadded<|eot_id|>"', '{replace: "\\n\\nPADDED<|eot_id|>"')
    with pytest.raises(SpecError, match=r"case 'whitespace_padded'.*deviation 'no-trim'.*matched nothing"):
        generate_spec(load_spec(p), llama_tok, root=tmp_path / "out")


def _golden_copy(tmp_path: Path, renderer: str = "llama3") -> Path:
    out = tmp_path / "golden"
    shutil.copytree(golden_root() / renderer, out / renderer)
    return out


def test_check_reports_a_changed_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _golden_copy(tmp_path)
    victim = out / "llama3" / "user_only.json"
    data = json.loads(victim.read_text(encoding="utf-8"))
    stored = data["generation_prompt"]["tokens"]
    position = len(stored) - 1
    oracle_id = stored[position]
    stored[position] = 13
    victim.write_text(dumps(data), encoding="utf-8")
    (out / "llama3" / "no_such_case.json").write_text("{}\n", encoding="utf-8")
    rc = main(["golden", "llama3", "--check", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 1
    changed = [ln for ln in stdout.splitlines() if ln.startswith("CHANGED")]
    assert len(changed) == 1 and "user_only.json" in changed[0]
    # the first differing token: its position, the stored id and the oracle's id
    assert f"position {position}" in changed[0] and "id 13" in changed[0] and f"id {oracle_id}" in changed[0]
    assert "stale" in stdout.lower() and "no_such_case.json" in stdout
    # without --check the generator repairs both
    assert main(["golden", "llama3", "--out", str(out)]) == 0
    assert not (out / "llama3" / "no_such_case.json").exists()
    assert main(["golden", "llama3", "--check", "--out", str(out)]) == 0


@pytest.mark.parametrize("field", ["tokenizer_sha256", "template_sha256"])
def test_check_fails_on_a_changed_tokenizer_or_template_hash(
    tmp_path: Path, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _golden_copy(tmp_path)
    victim = out / "llama3" / "system_user.json"
    data = json.loads(victim.read_text(encoding="utf-8"))
    data["provenance"][field] = "0" * 64
    victim.write_text(dumps(data), encoding="utf-8")
    assert main(["golden", "llama3", "--check", "--out", str(out)]) == 1
    changed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("CHANGED")]
    assert len(changed) == 1 and "system_user.json" in changed[0] and field in changed[0]


def test_check_passes_when_only_library_versions_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Goldens recorded under other transformers/tokenizers/jinja2 releases: reported on their own line, no failure."""
    from cookbook.conformance.oracle import library_versions

    out = _golden_copy(tmp_path)
    running = library_versions()
    files = sorted((out / "llama3").glob("*.json"))
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        data["provenance"]["versions"] = {**running, "transformers": "4.0.0", "jinja2": "2.0"}
        f.write_text(dumps(data), encoding="utf-8")
    rc = main(["golden", "llama3", "--check", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    lines = stdout.splitlines()
    assert f"content identical; recorded transformers 4.0.0, running {running['transformers']} ({len(files)} golden file(s))" in lines
    assert f"content identical; recorded jinja2 2.0, running {running['jinja2']} ({len(files)} golden file(s))" in lines
    assert not [ln for ln in lines if ln.startswith("CHANGED")]


def test_check_with_nothing_to_check_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty_specs = tmp_path / "specs"
    empty_specs.mkdir()
    assert main(["golden", "--check", "--specs", str(empty_specs)]) != 0
    assert str(empty_specs) in capsys.readouterr().err
    empty_goldens = tmp_path / "golden"
    empty_goldens.mkdir()
    assert main(["golden", "--check", "--out", str(empty_goldens)]) != 0
    assert str(empty_goldens) in capsys.readouterr().err


def test_golden_check_without_tml_renderers_checks_the_rest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An installed toolkit has no tml-renderers (a test-time peer that needs torch): `golden --check` checks
    every golden whose oracle is here, names the ones it could not check, and passes; with nothing checkable
    at all it fails (exit 2)."""
    from cookbook.conformance import tml

    monkeypatch.setattr(tml, "available", lambda: False)
    rc = main(["golden", "--check", "llama3", "deepseekv4_1"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "llama3: " in err and "golden(s) checked" in err
    assert "deepseekv4_1" in out and "not checked" in out
    assert main(["golden", "--check", "deepseekv4_1"]) == 2

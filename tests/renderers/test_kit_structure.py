"""The renderer kit's structure: no family module imports another family; variants are registry entries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cookbook.renderers.registry import builtin_renderer, builtin_renderer_names

RENDERERS = Path(__file__).resolve().parents[2] / "cookbook" / "renderers"
#: modules of the renderers package that are not families
SHARED = {"__init__", "base", "registry"}
FAMILIES = sorted(p.stem for p in RENDERERS.glob("*.py") if p.stem not in SHARED)


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in ``path`` names (relative imports resolved against
    ``package``, by default the package of ``path`` under cookbook/renderers)."""
    if package is None:
        package = "cookbook.renderers" + ("" if path.parent == RENDERERS else "." + path.parent.name)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # ``from cookbook.renderers import qwen3``
    return out


def test_there_are_families_to_check() -> None:
    assert {"qwen3", "qwen3_5", "glm", "kimi_k2", "nemotron3", "deepseek_v3"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_family_imports_another_family(family: str) -> None:
    others = {f"cookbook.renderers.{f}" for f in FAMILIES if f != family}
    bad = sorted(imported_modules(RENDERERS / f"{family}.py") & others)
    assert not bad, f"cookbook/renderers/{family}.py imports {bad}; move the shared piece to cookbook/renderers/kit/"


@pytest.mark.parametrize("module", sorted((RENDERERS / "kit").glob("*.py")), ids=lambda p: p.stem)
def test_the_kit_imports_no_family(module: Path) -> None:
    families = {f"cookbook.renderers.{f}" for f in FAMILIES}
    assert not imported_modules(module) & families


def test_the_import_checker_sees_a_family_import(tmp_path: Path) -> None:
    fake = RENDERERS / "glm.py"
    src = fake.read_text(encoding="utf-8") + "\nfrom cookbook.renderers.qwen3_5 import Lit\nfrom . import kimi_k2\n"
    probe = tmp_path / "glm.py"
    probe.write_text(src, encoding="utf-8")
    names = imported_modules(probe, "cookbook.renderers")
    assert {"cookbook.renderers.qwen3_5", "cookbook.renderers.kimi_k2"} <= names


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_defines_no_empty_variant_subclass(family: str) -> None:
    """A variant is a registry entry with options, not a subclass that only renames or flips attributes."""
    tree = ast.parse((RENDERERS / f"{family}.py").read_text(encoding="utf-8"))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Renderer")]
    for cls in classes:
        bases = {b.id for b in cls.bases if isinstance(b, ast.Name)}
        assert not bases & {c.name for c in classes}, f"{family}.{cls.name} subclasses another renderer of its family"


def test_variants_are_registry_entries_with_options() -> None:
    names = builtin_renderer_names()
    assert builtin_renderer("qwen3_disable_thinking").factory == builtin_renderer("qwen3").factory
    assert builtin_renderer("qwen3_disable_thinking").options == {"enable_thinking": False}
    assert builtin_renderer("gpt_oss_no_sysprompt").options == {"reasoning_effort": None}
    factories = {builtin_renderer(n).factory for n in names}
    assert len(factories) < len(names)

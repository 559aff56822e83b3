"""Our registry holds every renderer name the installed tinker-cookbook registers.

tinker-cookbook 0.6.1 has no public list of its built-in names: ``tinker_cookbook.renderers.get_renderer`` is a
chain of ``name == "..."`` comparisons. :func:`cookbook.conformance.impls.tinker_cookbook_names` reads that chain
from the installed package's source (the peer itself, not a list copied here), so a tinker-cookbook release that
adds a name fails this test until we register it too. Skipped when tinker-cookbook (a test-time peer, never a
dependency) is not installed.
"""

from __future__ import annotations

import pytest

from cookbook.conformance.impls import TINKER_COOKBOOK_RENAMES, names_compared_in, tinker_cookbook_names
from cookbook.renderers.registry import builtin_renderer_names

pytest.importorskip("tinker_cookbook.renderers", reason="tinker-cookbook (a [peers] extra) is not installed")


def test_reader_finds_the_names_of_an_if_chain() -> None:
    def registry(name: str, other: str) -> int:
        if name == "a":
            return 1
        elif name == "b" or other == "c":
            return 2
        return 3 if name != "d" else 4

    assert names_compared_in(registry) == {"a", "b"}


def test_reader_finds_tinker_cookbooks_names() -> None:
    names = tinker_cookbook_names()
    # a floor, so a change in how tinker-cookbook dispatches cannot make the comparison below vacuous
    assert {"llama3", "qwen3", "role_colon", "kimi_k2"} <= names and len(names) >= 40, sorted(names)


#: tinker-cookbook names we do not register yet, each with the reason. The list may only shrink: a name here that
#: we register fails the test below, so it is removed the day it lands.
NOT_YET: dict[str, str] = {
    **{
        f"kimi_k31_pro_{v}": "Kimi-K3.1-Pro: tinker-cookbook renders it with tml-renderers' KimiK31Pro and its "
        "KimiK3Tokenizer, which no tml-renderers release on PyPI has (0.2.1 is the only one); no template or "
        "tokenizer for it is reachable here (checked by test_kimi_k31_pro_has_no_oracle_here)"
        for v in ("max_reasoning", "high_reasoning", "low_reasoning", "disable_thinking", "no_reasoning_effort")
    },
}


def test_registry_holds_every_tinker_cookbook_name() -> None:
    missing = tinker_cookbook_names() - set(builtin_renderer_names())
    undeclared = sorted(missing - set(NOT_YET))
    assert not undeclared, (
        f"tinker-cookbook registers {len(undeclared)} renderer name(s) we do not: {undeclared}. "
        "Add each to cookbook/renderers/registry.py with a spec in specs/renderers/."
    )
    landed = sorted(set(NOT_YET) - missing)
    assert not landed, f"registered now, remove from NOT_YET: {landed}"


def test_kimi_k31_pro_has_no_oracle_here() -> None:
    """The reason given for the kimi_k31_pro names holds: the installed tml-renderers has neither the renderer nor
    the tokenizer tinker-cookbook 0.6.1 builds them from."""
    tml = pytest.importorskip("tml_renderers.renderers", reason="tml-renderers (needs torch) is not installed")
    import tml_renderers.tokenizers as tml_tokenizers

    assert not hasattr(tml, "KimiK31Pro") and not hasattr(tml_tokenizers, "KimiK3Tokenizer")


def test_every_name_that_means_another_format_is_declared() -> None:
    """A name both registries have but for different formats is mapped (or marked None) in the adapter."""
    assert TINKER_COOKBOOK_RENAMES["kimi_k2_thinking"] == "kimi_k2"
    assert set(TINKER_COOKBOOK_RENAMES.values()) - {None} <= set(tinker_cookbook_names())

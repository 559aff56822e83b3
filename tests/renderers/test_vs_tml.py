"""Differential test against tml-renderers, Thinking Machines' official native renderers.

For every spec with a ``tml:`` section, random conversations (tools, reasoning, multi-turn, per the spec's
claims) are rendered with the registered renderer and with the official renderer; supervised token ids and
weights and generation-prompt ids must agree token-exact, or the disagreement must be one of the spec's named
``tml.differences``. Skipped when tml_renderers (which imports torch) is not installed.

The number of conversations per renderer is ``COOKBOOK_TML_EXAMPLES`` (default 25 so the suite stays fast;
the ``tml`` nox session runs 200).
"""

from __future__ import annotations

import os

import pytest

from cookbook.conformance import tml
from cookbook.conformance.spec import Spec, all_spec_paths, load_spec

if not tml.available():
    pytest.skip("tml_renderers is not importable (pip install tml-renderers==0.2.1, needs torch)", allow_module_level=True)

EXAMPLES = int(os.environ.get("COOKBOOK_TML_EXAMPLES", "25"))
SPECS = [s for s in (load_spec(p) for p in all_spec_paths()) if s.tml is not None]


@pytest.mark.parametrize("spec", SPECS, ids=[s.renderer for s in SPECS])
def test_renderer_agrees_with_tml(spec: Spec) -> None:
    result = tml.differential(spec, examples=EXAMPLES)
    print(
        f"\n{spec.renderer} vs {result.oracle}: compared {result.compared}, agreements {result.agreements}, "
        f"named differences {result.named}"
    )
    assert result.compared > 0
    assert not result.unexplained, (
        f"{len(result.unexplained)} of {result.compared} conversations differ from {result.oracle} in a way "
        f"specs/renderers/{spec.renderer}.yaml does not name (tml.differences); first:\n{result.unexplained[0]}"
    )


def test_every_named_difference_uses_known_features() -> None:
    for spec in SPECS:
        assert spec.tml is not None
        for d in spec.tml.differences:
            assert d.reason.strip() and set(d.when) <= set(tml.FEATURES)


def test_features_of_a_conversation() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "1", "tool_call_id": "c"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "x"}]},
    ]
    assert tml.conversation_features(msgs) == {"tool_calls", "thinking"}
    assert "empty_assistant" in tml.conversation_features([{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}])

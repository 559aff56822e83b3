"""pytest plugin (entry point ``cookbook_mock``): the ``tinker_mock`` fixture.

One :class:`~cookbook.mock.server.MockTinker` per test session (started lazily, the first time a test asks
for it); its state (sessions, models, checkpoints, scripts, log, faults) is reset before and after every
test. ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` point at it while
the session runs.

Per-test faults::

    @pytest.mark.tinker_faults(error_rates={500: 0.3}, seed=1)
    def test_retries(tinker_mock): ...

    def test_other(tinker_mock):
        tinker_mock.set_faults("429=0.2,paths=asample")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cookbook.mock.server import MockTinker


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tinker_faults(faults=None, **kwargs): fault configuration for the tinker_mock fixture in this test",
    )


@pytest.fixture(scope="session")
def tinker_mock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockTinker]:
    """The session-wide mock server (prefer ``tinker_mock``, which also resets state per test)."""
    from cookbook.mock.server import MockTinker

    with MockTinker(state_dir=tmp_path_factory.mktemp("tinker-mock-state")) as mock:
        yield mock


@pytest.fixture
def tinker_mock(tinker_mock_server: MockTinker, request: pytest.FixtureRequest) -> Iterator[MockTinker]:
    """A running mock Tinker server with fresh state; faults from ``@pytest.mark.tinker_faults``."""
    mock = tinker_mock_server
    mock.reset()
    marker = request.node.get_closest_marker("tinker_faults")
    if marker is not None:
        mock.set_faults(*marker.args, **marker.kwargs)
    try:
        yield mock
    finally:
        mock.reset()

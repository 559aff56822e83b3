"""Peer tests: tinker-cookbook (a test-time peer, never a dependency) against the mock Tinker server."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "peer_smoke: tinker-cookbook's own recipe smoke tests on the mock (real vocabularies; slow)"
    )

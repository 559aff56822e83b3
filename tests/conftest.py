"""Suite-wide settings: offline, hypothesis profiles."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: modules whose tests take the longest (measured: the wheel test alone is about 3 minutes on the 2-core machine).
#: They are collected first so that `pytest -n auto` hands them out at the start, not as the last items of one
#: worker while the other idles.
LONGEST_FIRST = (
    "tests/packaging/test_wheel.py",
    "tests/loops/test_kill_resume.py",
    "tests/peers/test_tinker_cookbook_smoke.py",
    "tests/loops/test_recipes_offline.py",
    "tests/tokenizers/test_tml_tokenizers.py",
    "tests/loops/test_run_hygiene.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each module is kept

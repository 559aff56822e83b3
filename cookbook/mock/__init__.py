"""The mock Tinker server: the real Tinker HTTP protocol over a small deterministic numpy model.

* :class:`MockTinker` - the server in a background thread (context manager; sets ``TINKER_BASE_URL``).
* :class:`Faults` - latency, error rates, try-again, lost replies, scripted faults.
* ``cookbook mock serve`` - the same server as a process.
* the ``tinker_mock`` pytest fixture (``cookbook.mock.pytest_plugin``, registered as a pytest11 entry point).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cookbook.mock.faults import Faults
    from cookbook.mock.server import MockTinker

__all__ = ["TINY_MODEL", "Faults", "MockTinker"]

TINY_MODEL = "cookbook/tiny-test"
#: the models' output layer (``BaseModelSpec.head``): "auto" is the class-factored one (:mod:`cookbook.mock.classed`)
#: from ``CLASSED_VOCAB`` tokens on and the dense softmax below; numpy-free here, for the CLI's argument parser
HEADS = ("auto", "dense", "classed")
CLASSED_VOCAB = 32768


def __getattr__(name: str) -> Any:  # lazy: importing the plugin must not pull in numpy/uvicorn
    if name == "MockTinker":
        from cookbook.mock.server import MockTinker

        return MockTinker
    if name == "Faults":
        from cookbook.mock.faults import Faults

        return Faults
    raise AttributeError(name)

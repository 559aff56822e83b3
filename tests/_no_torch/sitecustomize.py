"""Put on ``PYTHONPATH`` of the subprocesses the tests start (``tests/subprocess_env.py``): ``import torch`` then
raises ImportError there, as on a machine where only cookbook's runtime dependencies are installed.

The test environment has torch (tml-renderers, an oracle, needs it), and the tinker SDK imports it whenever it is
importable: about 3 s of start-up per recipe process, for nothing cookbook uses."""

import sys

sys.modules["torch"] = None  # type: ignore[assignment]

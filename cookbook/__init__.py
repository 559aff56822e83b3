"""cookbook: verifiable Tinker post-training.

Reference renderers, losses, RL maths and training loops, executable specs and golden fixtures, a mock
Tinker server speaking the real HTTP protocol, and a conformance runner (`cookbook conform ...`).
"""

# The one source of the version: pyproject.toml reads it (``[tool.setuptools.dynamic]``), ``cookbook --version``
# prints it.
__version__ = "0.2.0"

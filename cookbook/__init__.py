"""cookbook: verifiable Tinker post-training.

Reference renderers, losses, RL maths and training loops, executable specs and golden fixtures, a mock
Tinker server speaking the real HTTP protocol, and a conformance runner (`cookbook conform ...`).
"""

__version__ = "0.1.0"

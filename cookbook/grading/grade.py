"""``grade_answer``: is a model's answer equal to the reference?

Order of checks (tinker-cookbook's ``grade_answer`` behaviour): MathD-normalised strings equal; broadly
normalised strings equal; tuple/interval split with element counts and brackets compared; per element,
fractions must match exactly, an integer never equals a non-integer string, anything else goes to
sympy (``simplify(truth - given) == 0``) or math-verify.

Unlike upstream, the symbolic check runs in a separate worker **process** that is killed and replaced when it
exceeds ``timeout``: a hung sympy call cannot block the caller (upstream's thread-based timeout only changes
the return value while the thread keeps running).
"""

from __future__ import annotations

import json
import logging
import re
import select
import subprocess
import sys
import threading
from typing import Literal

from cookbook.errors import ConfigurationError
from cookbook.grading.normalize import normalize_answer, normalize_mathd

log = logging.getLogger(__name__)

Grader = Literal["sympy", "math_verify"]
_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_INTEGER = re.compile(r"^-?\d+$")


class _Worker:
    """One long-lived ``python -m cookbook.grading._worker`` process; killed and replaced after a timeout.

    Thread-safe (one check at a time). A subprocess, not multiprocessing, so it works whatever the caller's
    ``__main__`` is (a REPL, stdin, a frozen app).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cookbook.grading._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        return self._proc

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def call(self, kind: str, args: tuple[str, str], timeout: float) -> bool | None:
        """The check's result, or None when it failed or ran out of time (the worker is then replaced)."""
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps([kind, *args]) + "\n")
                proc.stdin.flush()
            except OSError:
                self.kill()
                return None
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready:
                log.warning("grading check %s%r exceeded %.1f s; worker killed", kind, args, timeout)
                self.kill()
                return None
            line = proc.stdout.readline()
            if not line:
                self.kill()
                return None
            answer = json.loads(line)
            return bool(answer["equal"]) if answer.get("ok") else None


_WORKER = _Worker()
# the first check also pays for starting the worker and importing sympy
_STARTUP_ALLOWANCE = 20.0
_started = False


def _symbolic(kind: str, truth: str, given: str, timeout: float) -> bool:
    global _started
    allowance = 0.0 if _started else _STARTUP_ALLOWANCE
    result = _WORKER.call(kind, (truth, given), timeout + allowance)
    _started = True
    return bool(result)


def split_tuple(s: str) -> list[str]:
    """``(1, 2)`` / ``[a,b)`` -> elements; thousands separators (``1,000``) are not split points."""
    s = re.sub(r"(\d),(\d\d\d)($|\D)", r"\1\2\3", s)
    if len(s) > 2 and s[0] in "([" and s[-1] in ")]" and not any(c in s[1:-1] for c in "()[]"):
        return [e.strip() for e in s[1:-1].split(",")]
    return [s]


def grade_answer(given: str | None, truth: str | None, grader: Grader = "sympy", timeout: float = 1.0) -> bool:
    """True when ``given`` equals ``truth`` (both answers, e.g. from :func:`extract_boxed`)."""
    if grader not in ("sympy", "math_verify"):
        raise ConfigurationError(f"unknown grader {grader!r}; use 'sympy' or 'math_verify'")
    if given is None or truth is None:
        return False
    if grader == "math_verify":
        return _symbolic("math_verify", truth, given, timeout)
    if normalize_mathd(given) == normalize_mathd(truth):
        return True
    g, t = normalize_answer(given), normalize_answer(truth)
    if g == t:
        return True
    if not g or t is None:
        return False
    gs, ts = split_tuple(g), split_tuple(t)
    if len(gs) != len(ts):
        return False
    if len(ts) > 1 and (g[0] != t[0] or g[-1] != t[-1]):
        return False
    for ge, te in zip(gs, ts):
        if _FRACTION.match(ge) and _FRACTION.match(te):
            if ge != te:
                return False
        elif bool(_INTEGER.match(ge)) != bool(_INTEGER.match(te)):
            return False
        elif not _symbolic("sympy", te, ge, timeout):
            return False
    return True


def safe_grade(given: str | None, truth: str | None, grader: Grader = "sympy", timeout: float = 1.0) -> bool:
    """:func:`grade_answer`, with any error logged and counted as a wrong answer."""
    try:
        return grade_answer(given, truth, grader, timeout)
    except Exception as exc:
        log.warning("grading failed (%s: %s); counted as wrong", type(exc).__name__, exc)
        return False

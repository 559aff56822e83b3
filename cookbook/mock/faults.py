"""Fault injection for the mock server: latency, error rates by status, try-again, lost replies.

A :class:`Faults` value is plain data. It can be built in Python, from JSON (``POST /_mock/faults``) or from
the CLI string form ``latency_ms=5,429=0.1,500=0.05,try_again=0.2,lost_reply=0.1,paths=asample|forward_backward,seed=1``.

* ``latency_ms``: added before every affected request is handled.
* ``error_rates``: ``{status: probability}``; the request is answered with that status *before* it is handled
  (so a retry is safe). 429 carries ``Retry-After: 0``; 503 is a retryable "try again later".
* ``try_again``: probability that ``retrieve_future`` answers ``try_again`` even when the result is ready.
* ``lost_reply``: probability that a request is handled but its answer is replaced by a 500 (the SDK retries
  with the same ``seq_id``; the server must hand back the original future).
* ``paths``: endpoint names (the part after ``/api/v1/``) the faults apply to; default :data:`DEFAULT_PATHS`.
* ``script``: exact faults, consumed in order: ``[{"path": "forward_backward", "status": 500, "count": 1}]``.
* ``seed``: the fault RNG seed (runs are reproducible).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cookbook.errors import ConfigurationError

DEFAULT_PATHS: tuple[str, ...] = (
    "create_model",
    "get_info",
    "forward_backward",
    "optim_step",
    "save_weights",
    "save_weights_for_sampler",
    "load_weights",
    "create_sampling_session",
    "asample",
    "retrieve_future",
)
ALLOWED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class ScriptedFault:
    path: str
    status: int
    count: int = 1
    after: bool = False  # True: handle the request, then answer with `status` (a lost reply)


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rates: dict[int, float] = field(default_factory=dict)
    try_again: float = 0.0
    lost_reply: float = 0.0
    paths: tuple[str, ...] = DEFAULT_PATHS
    script: list[ScriptedFault] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0.0 <= self.latency_ms <= 60_000):
            raise ConfigurationError(f"faults.latency_ms must be in [0, 60000], got {self.latency_ms}")
        for status, p in self.error_rates.items():
            if int(status) not in ALLOWED_STATUSES:
                raise ConfigurationError(
                    f"faults.error_rates: status {status} not supported (use one of {sorted(ALLOWED_STATUSES)})"
                )
            _check_prob(f"faults.error_rates[{status}]", p)
        self.error_rates = {int(k): float(v) for k, v in self.error_rates.items()}
        if sum(self.error_rates.values()) > 1.0:
            raise ConfigurationError("faults.error_rates: probabilities sum to more than 1")
        _check_prob("faults.try_again", self.try_again)
        _check_prob("faults.lost_reply", self.lost_reply)
        self.paths = tuple(self.paths)
        for sf in self.script:
            if sf.status not in ALLOWED_STATUSES:
                raise ConfigurationError(f"faults.script: status {sf.status} not supported")

    @property
    def active(self) -> bool:
        return bool(
            self.latency_ms or self.error_rates or self.try_again or self.lost_reply or self.script
        )

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Faults:
        known = {"latency_ms", "error_rates", "try_again", "lost_reply", "paths", "script", "seed"}
        unknown = set(m) - known
        if unknown:
            raise ConfigurationError(f"faults: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        try:
            script = [ScriptedFault(**dict(s)) for s in m.get("script", [])]
            return cls(
                latency_ms=float(m.get("latency_ms", 0.0)),
                error_rates={int(k): float(v) for k, v in dict(m.get("error_rates", {})).items()},
                try_again=float(m.get("try_again", 0.0)),
                lost_reply=float(m.get("lost_reply", 0.0)),
                paths=tuple(m.get("paths", DEFAULT_PATHS)),
                script=script,
                seed=int(m.get("seed", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"faults: {exc}") from exc

    @classmethod
    def parse(cls, text: str) -> Faults:
        """Parse the CLI form ``key=value,...`` (a status code as key sets its error rate)."""
        m: dict[str, Any] = {"error_rates": {}}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise ConfigurationError(f"--faults: expected key=value, got {part!r}")
            k, v = (x.strip() for x in part.split("=", 1))
            if k.isdigit():
                m["error_rates"][int(k)] = v
            elif k == "paths":
                m["paths"] = tuple(p for p in v.split("|") if p)
            elif k in ("latency_ms", "try_again", "lost_reply", "seed"):
                m[k] = v
            else:
                raise ConfigurationError(
                    f"--faults: unknown key {k!r} (latency_ms, try_again, lost_reply, paths, seed, or a status)"
                )
        return cls.from_mapping(m)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rates": {str(k): v for k, v in self.error_rates.items()},
            "try_again": self.try_again,
            "lost_reply": self.lost_reply,
            "paths": list(self.paths),
            "script": [vars(s) for s in self.script],
            "seed": self.seed,
        }


def _check_prob(name: str, p: float) -> None:
    if not (0.0 <= p <= 1.0):
        raise ConfigurationError(f"{name} must be a probability in [0, 1], got {p}")


@dataclass(frozen=True)
class Decision:
    status_before: int | None = None
    status_after: int | None = None
    try_again: bool = False
    latency_s: float = 0.0


class FaultInjector:
    """Draws fault decisions from a seeded RNG (thread-safe)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)
            self._script = [ScriptedFault(**vars(s)) for s in faults.script]
            self.injected: list[tuple[str, int]] = []

    def decide(self, path: str) -> Decision:
        f = self.faults
        if not f.active or path not in f.paths:
            return Decision()
        with self._lock:
            for sf in self._script:
                if sf.count > 0 and sf.path == path:
                    sf.count -= 1
                    self.injected.append((path, sf.status))
                    if sf.after:
                        return Decision(status_after=sf.status, latency_s=f.latency_ms / 1000)
                    return Decision(status_before=sf.status, latency_s=f.latency_ms / 1000)
            u = self._rng.random()
            acc = 0.0
            before: int | None = None
            for status in sorted(f.error_rates):
                acc += f.error_rates[status]
                if u < acc:
                    before = status
                    break
            after = 500 if before is None and self._rng.random() < f.lost_reply else None
            try_again = path == "retrieve_future" and self._rng.random() < f.try_again
            if before is not None:
                self.injected.append((path, before))
            if after is not None:
                self.injected.append((path, after))
        return Decision(before, after, try_again, f.latency_ms / 1000)

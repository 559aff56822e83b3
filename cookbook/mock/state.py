"""Server state: sessions, training models, samplers, futures, per-model ``seq_id`` ordering, checkpoints, log.

This is the domain layer. It knows nothing about HTTP: it raises :class:`~cookbook.mock.errors.MockError`
(a kind and a field) and returns domain results (:class:`~cookbook.mock.engine.ForwardResult`,
:class:`~cookbook.mock.engine.SampleResult`, the small result records below); :mod:`cookbook.mock.protocol`
maps kinds to statuses and encodes replies. Everything here runs on the server's asyncio loop; numpy work is
sent to a thread pool.

Ordering and refusals (per training model):

* every training op carries a ``seq_id``; ops execute strictly in ``seq_id`` order (chunk 0 of a chunked
  ``forward_backward`` arrives last and waits for nothing; later chunks wait for it);
* a training request takes its ``seq_id`` slot **before any check of its payload**: the protocol layer hands
  over a ``build`` callable that parses the request into a :data:`TrainingOp`, and it runs only once the slot is
  held. A refusal (bad checkpoint name, hyperparameter out of range, unsupported feature, a bug) resolves the
  slot with that error (its future fails), so later ops of the same client never wait for it. Only a request
  whose ``model_id`` / ``seq_id`` cannot be read, names no live model, or reuses a seq_id is an HTTP 4xx;
* idempotency is one mechanism (:class:`Idempotency`) for model creation, sampler creation, training ops and
  sampling: the same key with the same payload gets the original outcome back (the original id, or the
  original refusal); the same key with a different payload is a conflict naming the field;
* a failed op's future answers ``(message, category)`` (the SDK raises ``RequestFailedError``).

Memory: a session that ends (``ServiceClient`` close, or no heartbeat/request for ``session_idle_s``) drops
its models and samplers; at most ``max_resident`` trainers and samplers keep their arrays in memory, the least
recently used others are spilled to ``<state_dir>/spill`` and reloaded transparently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from cookbook.errors import CookbookError
from cookbook.mock.engine import (
    AdamHyper,
    Adapter,
    BaseModelSpec,
    DatumArrays,
    Engine,
    ForwardResult,
    ProvenanceSpan,
    SampleResult,
    SampleSpec,
    Trainer,
    adapter_arrays,
    trainer_from_arrays,
    trainer_from_state_arrays,
    trainer_state_arrays,
)
from cookbook.mock.errors import (
    InvalidLossInput,
    Kind,
    MockError,
    as_mock_error,
    conflict,
    not_found,
    unsupported,
)
from cookbook.mock.faults import FaultInjector
from cookbook.mock.models import ModelRegistry, decoder_for, encoder_for

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,199}$")
KINDS = {"weights": "training", "sampler_weights": "sampler"}
MAX_SEQ_AHEAD = 100_000
MAX_FUTURES = 50_000
MAX_REMEMBERED = 20_000  # idempotency entries kept per table (oldest dropped first)
DEFAULT_SESSION_IDLE_S = 300.0  # the SDK heartbeats every 10 s
DEFAULT_MAX_RESIDENT = 8

log = logging.getLogger("cookbook.mock")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


# ------------------------------------------------------------------------------------------ domain ops


@dataclass(frozen=True)
class ForwardBackwardOp:
    loss_fn: str
    data: list[DatumArrays]
    loss_fn_config: dict[str, float]
    forward_only: bool

    @property
    def request_type(self) -> str:
        return "Forward" if self.forward_only else "ForwardBackward"


@dataclass(frozen=True)
class OptimStepOp:
    hp: AdamHyper
    request_type: str = "OptimStep"


@dataclass(frozen=True)
class SaveOp:
    kind: str  # "weights" (save_state, with optimizer) or "sampler_weights"
    name: str
    overwrite: bool
    ttl_seconds: int | None
    user_metadata: dict[str, str] | None

    @property
    def request_type(self) -> str:
        return "SaveWeights" if self.kind == "weights" else "SaveWeightsForSampler"


@dataclass(frozen=True)
class SamplerSnapshotOp:
    """``save_weights_for_sampler`` without a name: an in-memory sampler of the current weights."""

    sampling_session_seq_id: int
    request_type: str = "SaveWeightsForSampler"


@dataclass(frozen=True)
class LoadOp:
    path: str
    with_optimizer: bool
    request_type: str = "LoadWeights"


@dataclass(frozen=True)
class UnsupportedOp:
    """A training request for a Tinker feature the mock does not implement (it still takes its slot)."""

    feature: str
    hint: str
    request_type: str = "Unsupported"


TrainingOp = ForwardBackwardOp | OptimStepOp | SaveOp | SamplerSnapshotOp | LoadOp | UnsupportedOp


# ------------------------------------------------------------------------------------------ domain results


@dataclass(frozen=True)
class ModelCreated:
    model_id: str


@dataclass(frozen=True)
class OptimStepped:
    metrics: dict[str, float]


@dataclass(frozen=True)
class Saved:
    path: str
    kind: str


@dataclass(frozen=True)
class SamplerCreated:
    sampling_session_id: str


@dataclass(frozen=True)
class Loaded:
    path: str
    model_id: str | None  # set when a new model was created from the checkpoint


OpResult = ForwardResult | SampleResult | ModelCreated | OptimStepped | Saved | SamplerCreated | Loaded


@dataclass(frozen=True)
class Submitted:
    """A request accepted for execution: its future's id (and the model it concerns)."""

    request_id: str
    model_id: str | None = None
    sample_sequence_ids: tuple[str, ...] = ()


STABILITY_TTL_S = 86_400.0  # Tinker: recorded sequences "can be trained on for one day after sampling"


@dataclass
class StabilityRecord:
    """What a sample made with ``record_stability_info=True`` leaves for ``stable_reinforce``: its session, the
    request's prompt, the sampled tokens and their logprobs, and when it was last sampled or trained on."""

    session_id: str
    prompt: np.ndarray  # int64 [P]
    tokens: np.ndarray  # int64 [T]
    logprobs: np.ndarray  # float64 [T]
    last_used: float


# ------------------------------------------------------------------------------------------ idempotency


@dataclass
class _Outcome(Generic[T]):
    fingerprint: bytes
    value: T | None = None
    refusal: BaseException | None = None


class Idempotency(Generic[K, T]):
    """The one idempotency mechanism: ``key -> (fingerprint, outcome)`` of the first request with that key.

    :meth:`once` runs ``run`` for a new key and remembers its value or the exception it raised; a repeat of
    the same key with the same fingerprint returns the same value (or raises the same error); a different
    fingerprint is a conflict naming ``field``. At most ``limit`` keys are remembered (oldest dropped first).
    """

    def __init__(self, field_name: str, where: str, limit: int = MAX_REMEMBERED) -> None:
        self.field = field_name
        self.where = where
        self.limit = limit
        self._seen: OrderedDict[K, _Outcome[T]] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def keys(self) -> Iterator[K]:
        return iter(self._seen)

    def replay(self, key: K, fingerprint: bytes) -> _Outcome[T] | None:
        prev = self._seen.get(key)
        if prev is None:
            return None
        if prev.fingerprint != fingerprint:
            raise conflict(self.field, f"{key} was already used {self.where} by a different request")
        return prev

    def once(self, key: K, fingerprint: bytes, run: Callable[[], T]) -> T:
        prev = self.replay(key, fingerprint)
        if prev is not None:
            if prev.refusal is not None:
                raise prev.refusal
            return prev.value  # type: ignore[return-value]
        try:
            value = run()
        except Exception as exc:
            self._remember(key, _Outcome(fingerprint, refusal=exc))
            raise
        self._remember(key, _Outcome(fingerprint, value=value))
        return value

    def _remember(self, key: K, outcome: _Outcome[T]) -> None:
        self._seen[key] = outcome
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)


# ------------------------------------------------------------------------------------------ records


@dataclass
class FutureRecord:
    request_id: str
    request_type: str
    event: asyncio.Event = field(default_factory=asyncio.Event)
    result: OpResult | None = None
    error: tuple[str, str] | None = None  # (message, category "user" | "server")
    created: float = field(default_factory=time.monotonic)

    def finish(self, result: OpResult) -> None:
        if not self.event.is_set():
            self.result = result
            self.event.set()

    def fail(self, message: str, category: str) -> None:
        if not self.event.is_set():
            self.error = (message, category)
            self.event.set()

    @property
    def done(self) -> bool:
        return self.event.is_set()


class Resident:
    """Arrays that may be spilled to disk and reloaded (a trainer or a sampler's adapter)."""

    key: str
    spec: BaseModelSpec
    lock: asyncio.Lock
    last_used: float

    @property
    def loaded(self) -> bool:
        raise NotImplementedError

    def to_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError


class ModelRecord(Resident):
    def __init__(
        self,
        model_id: str,
        session_id: str,
        spec: BaseModelSpec,
        trainer: Trainer,
        lora_config: dict[str, Any],
        user_metadata: dict[str, str] | None,
    ) -> None:
        self.key = self.model_id = model_id
        self.session_id = session_id
        self.spec = spec
        self.trainer: Trainer | None = trainer
        self.rank = trainer.adapter.rank
        self.lora_seed = trainer.lora_seed
        self.lora_config = lora_config
        self.user_metadata = user_metadata
        self.next_seq = 1
        self.seqs: Idempotency[int, Submitted] = Idempotency("seq_id", f"for model {model_id}")
        # seq_id -> (op closure, future); (None, None) marks a slot resolved by a refusal
        self.pending: dict[int, tuple[Callable[[Trainer], OpResult] | None, FutureRecord | None]] = {}
        self.running = False
        self.closed = False
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self.last_request_time = now_iso()

    @property
    def loaded(self) -> bool:
        return self.trainer is not None

    def to_arrays(self) -> dict[str, np.ndarray]:
        assert self.trainer is not None
        return trainer_state_arrays(self.trainer)

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.trainer = trainer_from_state_arrays(self.spec, arrays)

    def drop(self) -> None:
        self.trainer = None


class SamplerRecord(Resident):
    def __init__(
        self, sampler_id: str, session_id: str, spec: BaseModelSpec, adapter: Adapter, model_path: str | None
    ) -> None:
        self.key = self.sampler_id = sampler_id
        self.session_id = session_id
        self.spec = spec
        self.adapter: Adapter | None = adapter
        self.model_path = model_path
        self.seqs: Idempotency[int, Submitted] = Idempotency("seq_id", f"for sampler {sampler_id}")
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()

    @property
    def loaded(self) -> bool:
        return self.adapter is not None

    def to_arrays(self) -> dict[str, np.ndarray]:
        assert self.adapter is not None
        return {"A": self.adapter.A, "B": self.adapter.B}

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.adapter = Adapter(np.asarray(arrays["A"]), np.asarray(arrays["B"]))

    def drop(self) -> None:
        self.adapter = None


@dataclass
class SessionRecord:
    session_id: str
    tags: list[str]
    user_metadata: dict[str, str] | None
    models: Idempotency[int, Submitted] = field(init=False)  # model_seq_id -> create_model / load
    samplers: Idempotency[int, Awaitable[str]] = field(init=False)  # sampling_session_seq_id -> sampler id
    training_run_ids: list[str] = field(default_factory=list)
    sampler_ids: list[str] = field(default_factory=list)
    finished: bool = False
    last_active: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        where = f"in session {self.session_id}"
        self.models = Idempotency("model_seq_id", where)
        self.samplers = Idempotency("sampling_session_seq_id", where)


@dataclass
class RequestLogEntry:
    method: str
    path: str
    endpoint: str
    status: int
    sdk_method: str | None
    request_type: str | None
    model_id: str | None = None
    seq_id: int | None = None
    request_id: str | None = None
    duration_ms: float = 0.0
    fault: str | None = None
    time: float = field(default_factory=time.time)


# ------------------------------------------------------------------------------------------ checkpoints


def _atomic_write(path: Path, write: Callable[[Any], None]) -> int:
    """Write to a ``.<name>.<random>.tmp`` sibling, fsync, ``os.replace``; returns the size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size


class CheckpointStore:
    """``<root>/runs/<run_id>/{run.json, weights/<name>.npz+.json, sampler_weights/<name>.npz+.json}``.

    Every file is written to a temporary name, fsynced, then ``os.replace``d; the ``.json`` is written last
    and marks a complete checkpoint, so a SIGKILL never leaves a half-written checkpoint visible. Opening a
    store removes the temporary files such a kill leaves behind. A checkpoint whose ``expires_at`` has passed
    is gone: it is not listed, cannot be loaded, and its files are removed when it is next seen.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        self.removed_partial = self.remove_partial_files()

    def remove_partial_files(self) -> int:
        n = 0
        for p in (self.root / "runs").rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
        return n

    def run_dir(self, run_id: str, field_name: str = "path") -> Path:
        if not isinstance(run_id, str) or not RUN_RE.match(run_id) or ".." in run_id:
            raise MockError(field_name, f"training run id {run_id!r} is not valid")
        return self.root / "runs" / run_id

    @staticmethod
    def check_name(name: str, field_name: str = "path") -> str:
        if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
            raise MockError(
                field_name,
                f"checkpoint name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (no '/', no '..', no spaces or ':')",
            )
        return name

    def parse_path(self, path: str, field_name: str = "path") -> tuple[str, str, str]:
        """``tinker://<run>/<weights|sampler_weights>/<name>`` -> (run, kind, name)."""
        if not isinstance(path, str) or not path.startswith("tinker://"):
            raise MockError(field_name, f"{path!r} is not a tinker:// path")
        parts = path[len("tinker://") :].split("/")
        if len(parts) != 3 or parts[1] not in KINDS:
            raise MockError(
                field_name,
                f"{path!r} must look like tinker://<run_id>/weights/<name> or tinker://<run_id>/sampler_weights/<name>",
            )
        run, kind, name = parts
        self.run_dir(run, field_name)
        self.check_name(name, field_name)
        return run, kind, name

    def parse_checkpoint_id(self, checkpoint_id: str, field_name: str = "checkpoint_id") -> tuple[str, str]:
        parts = checkpoint_id.split("/")
        if len(parts) != 2 or parts[0] not in KINDS:
            raise MockError(field_name, f"{checkpoint_id!r} must be weights/<name> or sampler_weights/<name>")
        self.check_name(parts[1], field_name)
        return parts[0], parts[1]

    def write_json(self, path: Path, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, indent=1, sort_keys=True).encode()
        _atomic_write(path, lambda f: f.write(data))

    def save_run(self, run_id: str, meta: dict[str, Any]) -> None:
        self.write_json(self.run_dir(run_id) / "run.json", meta)

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        p = self.run_dir(run_id, "training_run_id") / "run.json"
        try:
            obj = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def list_runs(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.root / "runs").glob("*/run.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(p.read_text()))
        out.sort(key=lambda r: (r.get("created", ""), r.get("training_run_id", "")))
        return out

    # ---------------------------------------------------------------- checkpoint records

    def _record_path(self, run_id: str, kind: str, name: str) -> Path:
        return self.run_dir(run_id) / kind / f"{name}.json"

    def _read_record(self, jpath: Path) -> dict[str, Any] | None:
        """The checkpoint record, or None if absent, unreadable or expired (then its files are removed)."""
        try:
            ck = json.loads(jpath.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(ck, dict):
            return None
        exp = ck.get("expires_at")
        if exp is not None and datetime.fromisoformat(exp) <= datetime.now(UTC):
            self._remove(jpath)
            return None
        return ck

    @staticmethod
    def _remove(jpath: Path) -> None:
        for p in (jpath, jpath.with_suffix(".npz")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def save(
        self,
        run_id: str,
        kind: str,
        name: str,
        arrays: dict[str, np.ndarray],
        meta: dict[str, Any],
        overwrite: bool,
        ttl_seconds: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.check_name(name)
        jpath = self._record_path(run_id, kind, name)
        if not overwrite and self._read_record(jpath) is not None:
            raise conflict(
                "path", f"checkpoint tinker://{run_id}/{kind}/{name} already exists; pass overwrite=True or use a new name"
            )
        size = _write_npz(jpath.with_suffix(".npz"), arrays)
        ck = {
            "checkpoint_id": f"{kind}/{name}",
            "checkpoint_type": KINDS[kind],
            "time": now_iso(),
            "tinker_path": f"tinker://{run_id}/{kind}/{name}",
            "size_bytes": size,
            "public": False,
            "user_metadata": user_metadata,
            "expires_at": _expiry(ttl_seconds),
            "meta": meta,
        }
        self.write_json(jpath, ck)
        return ck

    def record(self, path: str, field_name: str = "path") -> dict[str, Any]:
        run, kind, name = self.parse_path(path, field_name)
        ck = self._read_record(self._record_path(run, kind, name))
        if ck is None:
            raise not_found(field_name, f"checkpoint {path} not found (never saved, deleted or expired)")
        return ck

    def load(self, path: str, field_name: str = "path") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        ck = self.record(path, field_name)
        run, kind, name = self.parse_path(path, field_name)
        try:
            with np.load(self._record_path(run, kind, name).with_suffix(".npz"), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError as exc:
            raise not_found(field_name, f"checkpoint {path} not found") from exc
        except (OSError, ValueError) as exc:
            raise not_found(field_name, f"checkpoint {path} is unreadable ({exc})") from exc
        return ck, arrays

    def exists(self, path: str, field_name: str = "path") -> bool:
        run, kind, name = self.parse_path(path, field_name)
        return self._read_record(self._record_path(run, kind, name)) is not None

    def list_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        d = self.run_dir(run_id, "training_run_id")
        out = []
        for kind in KINDS:
            for p in sorted((d / kind).glob("*.json")):
                ck = self._read_record(p)
                if ck is not None:
                    ck.pop("meta", None)
                    out.append(ck)
        out.sort(key=lambda c: (c["time"], c["checkpoint_id"]))
        return out

    def update(self, run_id: str, checkpoint_id: str, **changes: Any) -> dict[str, Any]:
        """Change ``public`` / ``expires_at`` of a checkpoint record (atomically)."""
        kind, name = self.parse_checkpoint_id(checkpoint_id)
        jpath = self._record_path(run_id, kind, name)
        ck = self._read_record(jpath)
        if ck is None:
            raise not_found("checkpoint_id", f"checkpoint tinker://{run_id}/{checkpoint_id} not found")
        ck.update(changes)
        self.write_json(jpath, ck)
        return ck

    def delete(self, run_id: str, checkpoint_id: str) -> bool:
        kind, name = self.parse_checkpoint_id(checkpoint_id)
        jpath = self._record_path(run_id, kind, name)
        found = self._read_record(jpath) is not None
        self._remove(jpath)
        return found

    def purge_expired(self) -> None:
        for p in (self.root / "runs").glob("*/*/*.json"):
            self._read_record(p)

    def wipe(self) -> None:
        shutil.rmtree(self.root / "runs", ignore_errors=True)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    return _atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **arrays))


def _expiry(ttl_seconds: int | None) -> str | None:
    return None if ttl_seconds is None else (datetime.now(UTC) + timedelta(seconds=ttl_seconds)).isoformat()


# ------------------------------------------------------------------------------------------ state


class MockState:
    """All mutable server state (owned by one asyncio loop)."""

    def __init__(
        self,
        state_dir: Path,
        registry: ModelRegistry | None = None,
        engine: Engine | None = None,
        faults: FaultInjector | None = None,
        long_poll_s: float = 20.0,
        workers: int = 4,
        session_idle_s: float = DEFAULT_SESSION_IDLE_S,
        max_resident: int = DEFAULT_MAX_RESIDENT,
    ) -> None:
        if max_resident < 1:
            raise MockError("max_resident", f"must be >= 1, got {max_resident}")
        self.state_dir = Path(state_dir)
        self.store = CheckpointStore(self.state_dir)
        self.spill_dir = self.state_dir / "spill"
        shutil.rmtree(self.spill_dir, ignore_errors=True)  # spilled models of an earlier process are gone
        self.registry = registry or ModelRegistry()
        self.engine = engine or Engine()
        self.faults = faults or FaultInjector()
        self.long_poll_s = long_poll_s
        self.session_idle_s = session_idle_s
        self.max_resident = max_resident
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mock-engine")
        self.closing = asyncio.Event()
        self.instance = uuid.uuid4().hex[:8]
        self._clear()

    def _clear(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}
        self.models: dict[str, ModelRecord] = {}
        self.samplers: dict[str, SamplerRecord] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()  # model/sampler id -> its ended session
        self.futures: OrderedDict[str, FutureRecord] = OrderedDict()
        self.log: deque[RequestLogEntry] = deque(maxlen=200_000)
        self.scripted: deque[list[int] | str] = deque()
        self._ids = itertools.count(1)
        self._sample_counter = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        # sequence id -> what stable_reinforce needs of it (least recently used first)
        self.stability: OrderedDict[str, StabilityRecord] = OrderedDict()
        self._stability_lock = threading.Lock()

    def reset(self, wipe_checkpoints: bool = True) -> None:
        for fut in self.futures.values():
            fut.fail("the mock server was reset", "server")
        for m in self.models.values():
            m.closed = True
        self._clear()
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        self.instance = uuid.uuid4().hex[:8]
        if wipe_checkpoints:
            self.store.wipe()

    def shutdown(self) -> None:
        self.closing.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ ids / futures / tasks

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{self.instance}-{next(self._ids)}"

    @staticmethod
    def model_id_for(session_id: str, model_seq_id: int) -> str:
        return f"{session_id}:train:{model_seq_id}"  # the SDK assumes this form for create-via-load

    @staticmethod
    def sampler_id_for(session_id: str, sampling_session_seq_id: int) -> str:
        return f"{session_id}:sample:{sampling_session_seq_id}"

    def new_future(self, request_type: str) -> FutureRecord:
        fut = FutureRecord(self.new_id("req"), request_type)
        self.futures[fut.request_id] = fut
        if len(self.futures) > MAX_FUTURES:  # drop the oldest completed futures
            for rid in list(itertools.islice(self.futures, len(self.futures) - MAX_FUTURES)):
                if self.futures[rid].done:
                    del self.futures[rid]
        return fut

    def future(self, request_id: str) -> FutureRecord:
        fut = self.futures.get(request_id)
        if fut is None:
            raise not_found("request_id", f"unknown request id {request_id!r}")
        return fut

    async def _offload(self, fn: Callable[[], T]) -> tuple[T | None, tuple[str, str] | None]:
        """Run ``fn`` on the engine pool; return (result, None) or (None, (message, category))."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, fn), None
        except CookbookError as exc:
            return None, (str(exc), "user")
        except RuntimeError as exc:  # executor shut down
            return None, (f"server error: {exc}", "server")
        except Exception as exc:  # an engine bug must not take the server down
            return None, (f"server error: {type(exc).__name__}: {exc}", "server")

    async def _execute(self, fut: FutureRecord, fn: Callable[[], OpResult]) -> None:
        result, err = await self._offload(fn)
        if err is not None:
            fut.fail(*err)
        else:
            assert result is not None
            fut.finish(result)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run_now(self, request_type: str, fn: Callable[[], OpResult]) -> FutureRecord:
        fut = self.new_future(request_type)
        self.spawn(self._execute(fut, fn))
        return fut

    async def wait(self, request_id: str, timeout: float) -> FutureRecord:
        fut = self.future(request_id)
        if fut.done:
            return fut
        waiter = asyncio.ensure_future(fut.event.wait())
        closer = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({waiter, closer}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()
        return fut

    def cancel(self, request_id: str) -> None:
        """``cancel_future``: the future fails at once (category user); work not yet started is skipped and
        the result of work already running is discarded."""
        self.future(request_id).fail(f"request {request_id} was cancelled by the client (cancel_future)", "user")

    # ------------------------------------------------------------ sessions

    def session(self, session_id: str, field_name: str = "session_id", active: bool = True) -> SessionRecord:
        s = self.sessions.get(session_id)
        if s is None:
            raise not_found(field_name, f"unknown session {session_id!r}")
        if active and s.finished:
            raise MockError(field_name, f"session {session_id!r} has ended; create a new ServiceClient", Kind.GONE)
        s.last_active = time.monotonic()
        return s

    def create_session(self, tags: list[str], user_metadata: dict[str, str] | None) -> str:
        sid = self.new_id("session")
        self.sessions[sid] = SessionRecord(sid, tags, user_metadata)
        return sid

    def heartbeat(self, session_id: str) -> None:
        self.session(session_id)

    def end_session(self, session_id: str) -> None:
        """The session is over: its models and samplers leave memory (checkpoints stay on disk)."""
        s = self.session(session_id, active=False)
        s.finished = True
        for mid in s.training_run_ids:
            m = self.models.pop(mid, None)
            if m is not None:
                m.closed = True
                self._forget(m)
                for fn_fut in m.pending.values():
                    if fn_fut[1] is not None:
                        fn_fut[1].fail(f"session {session_id} ended before this request ran", "user")
                m.pending.clear()
            self._retire(mid, session_id)
        for sid in s.sampler_ids:
            sp = self.samplers.pop(sid, None)
            if sp is not None:
                self._forget(sp)
            self._retire(sid, session_id)
        if not any(not other.finished for other in self.sessions.values()):
            self.engine.release_buffers()  # nobody left to reuse the engine's scratch logits buffers

    def _retire(self, key: str, session_id: str) -> None:
        self.ended[key] = session_id
        while len(self.ended) > MAX_REMEMBERED:
            self.ended.popitem(last=False)

    def reap_idle(self, now: float | None = None) -> list[str]:
        """End every session without a heartbeat or request for ``session_idle_s``; returns their ids."""
        t = time.monotonic() if now is None else now
        idle = [s.session_id for s in self.sessions.values() if not s.finished and t - s.last_active > self.session_idle_s]
        for sid in idle:
            self.end_session(sid)
        return idle

    async def housekeeping(self) -> None:
        """Background loop (started by the app): idle sessions end, expired checkpoints disappear."""
        period = max(0.05, min(30.0, self.session_idle_s / 4))
        while not self.closing.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closing.wait(), timeout=period)
            if self.closing.is_set():
                return
            self.reap_idle()
            await asyncio.get_running_loop().run_in_executor(self.executor, self.store.purge_expired)

    def model(self, model_id: str, field_name: str = "model_id") -> ModelRecord:
        m = self.models.get(model_id)
        if m is None:
            if model_id in self.ended:
                raise MockError(
                    field_name,
                    f"model {model_id!r} belonged to session {self.ended[model_id]!r}, which has ended; "
                    "its checkpoints remain (create_training_client_from_state)",
                    Kind.NOT_FOUND,
                )
            raise not_found(field_name, f"unknown model {model_id!r} (create it with create_lora_training_client first)")
        m.last_request_time = now_iso()
        with contextlib.suppress(MockError):
            self.session(m.session_id)
        return m

    def sampler(self, sampler_id: str, field_name: str = "sampling_session_id") -> SamplerRecord:
        s = self.samplers.get(sampler_id)
        if s is None:
            if sampler_id in self.ended:
                raise not_found(field_name, f"sampler {sampler_id!r} belonged to session {self.ended[sampler_id]!r}, which has ended")
            raise not_found(field_name, f"unknown sampling session {sampler_id!r}")
        return s

    # ------------------------------------------------------------ residency (LRU, spill, reload)

    def _spill_path(self, r: Resident) -> Path:
        return self.spill_dir / (hashlib.sha256(r.key.encode()).hexdigest()[:32] + ".npz")

    def _forget(self, r: Resident) -> None:
        r.drop()
        with contextlib.suppress(FileNotFoundError):
            self._spill_path(r).unlink()

    def _residents(self) -> list[Resident]:
        return [*self.models.values(), *self.samplers.values()]

    async def _ensure_loaded(self, r: Resident) -> None:
        """Called with ``r.lock`` held: reload spilled arrays, mark ``r`` most recently used."""
        r.last_used = time.monotonic()
        if r.loaded:
            return
        path = self._spill_path(r)

        def load() -> dict[str, np.ndarray]:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        arrays = await asyncio.get_running_loop().run_in_executor(self.executor, load)
        r.from_arrays(arrays)

    async def _evict(self, keep: Resident | None = None) -> None:
        """Spill the least recently used residents (not busy, not ``keep``) until at most ``max_resident``."""
        loaded = [r for r in self._residents() if r.loaded]
        excess = len(loaded) - self.max_resident
        if excess <= 0:
            return
        for r in sorted(loaded, key=lambda r: r.last_used):
            if excess <= 0:
                break
            if r is keep or r.lock.locked():
                continue
            async with r.lock:
                if not r.loaded:
                    continue
                await asyncio.get_running_loop().run_in_executor(
                    self.executor, _write_npz, self._spill_path(r), r.to_arrays()
                )
                r.drop()
                excess -= 1

    # ------------------------------------------------------------ models

    def _run_meta(self, model_id: str, spec: BaseModelSpec, rank: int, lora_config: dict[str, Any],
                  user_metadata: dict[str, str] | None, session_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "training_run_id": model_id,
            "base_model": spec.name,
            "model_owner": "mock",
            "is_lora": True,
            "lora_rank": rank,
            "lora_config": lora_config,
            "user_metadata": user_metadata,
            "created": now_iso(),
            "session_id": session_id,
            **extra,
        }

    def _create(
        self,
        session_id: str,
        model_seq_id: int,
        fingerprint: bytes,
        request_type: str,
        build: Callable[[str], tuple[Trainer, BaseModelSpec, dict[str, Any]]],
        user_metadata: dict[str, str] | None,
        result: Callable[[str], OpResult],
        check: Callable[[], None] = lambda: None,
    ) -> Submitted:
        sess = self.session(session_id)
        model_id = self.model_id_for(session_id, model_seq_id)

        def submit() -> Submitted:
            check()
            fut = self.new_future(request_type)

            async def run() -> None:
                r, err = await self._offload(lambda: build(model_id))
                if err is not None or r is None:
                    fut.fail(*(err or ("server error: no result", "server")))
                    return
                trainer, spec, lora_config = r
                if sess.finished:
                    fut.fail(f"session {session_id} ended before the model was created", "user")
                    return
                m = ModelRecord(model_id, session_id, spec, trainer, lora_config, user_metadata)
                self.models[model_id] = m
                sess.training_run_ids.append(model_id)
                await self._evict(keep=m)
                fut.finish(result(model_id))

            self.spawn(run())
            return Submitted(fut.request_id, model_id)

        return sess.models.once(model_seq_id, fingerprint, submit)

    def create_model(
        self,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora_config: dict[str, Any],
        user_metadata: dict[str, str] | None,
        fingerprint: bytes,
    ) -> Submitted:
        spec_holder: list[BaseModelSpec] = []

        def check() -> None:
            spec_holder.append(self.resolve(base_model))

        def build(model_id: str) -> tuple[Trainer, BaseModelSpec, dict[str, Any]]:
            spec = spec_holder[0]
            rank, seed = int(lora_config["rank"]), int(lora_config.get("seed") or 0)
            trainer = self.engine.new_trainer(spec, rank, seed)
            meta = self._run_meta(model_id, spec, rank, lora_config, user_metadata, session_id)
            self.store.save_run(model_id, meta)
            return trainer, spec, lora_config

        return self._create(
            session_id, model_seq_id, fingerprint, "CreateModel", build, user_metadata, ModelCreated, check
        )

    def create_model_from_checkpoint(
        self,
        session_id: str,
        model_seq_id: int,
        path: str,
        with_optimizer: bool,
        user_metadata: dict[str, str] | None,
        fingerprint: bytes,
    ) -> Submitted:
        def check() -> None:
            ck = self.store.record(path)
            if with_optimizer and not ck["tinker_path"].split("/")[-2] == "weights":
                raise MockError("path", f"{path} is a sampler checkpoint without optimizer state; use a save_state() path")

        def build(model_id: str) -> tuple[Trainer, BaseModelSpec, dict[str, Any]]:
            ck, arrays = self.store.load(path)
            meta = ck.get("meta", {})
            spec = self.resolve(meta["base_model"])
            trainer = trainer_from_arrays(spec, arrays, with_optimizer, int(meta.get("lora_seed", 0)))
            lora_config = meta.get("lora_config", {"rank": trainer.adapter.rank})
            run_meta = self._run_meta(
                model_id, spec, trainer.adapter.rank, lora_config, user_metadata, session_id, loaded_from=path
            )
            self.store.save_run(model_id, run_meta)
            return trainer, spec, lora_config

        return self._create(
            session_id, model_seq_id, fingerprint, "LoadWeights", build, user_metadata,
            lambda mid: Loaded(path, mid), check,
        )

    def resolve(self, base_model: str) -> BaseModelSpec:
        try:
            return self.registry.resolve(base_model)
        except CookbookError as exc:
            raise not_found("base_model", str(exc)) from exc

    # ------------------------------------------------------------ ordered training ops

    def submit_training(
        self, model_id: str, seq_id: int | None, fingerprint: bytes, build: Callable[[], TrainingOp]
    ) -> Submitted:
        """Take ``seq_id``'s slot, then build and check the op; a refusal at any point resolves the slot.

        ``build`` parses the request; it runs only once the slot is held, and anything it (or the checks)
        raises becomes the slot's outcome: the request is accepted with a request id whose future fails with
        the error (category "user", or "server" for a bug). Refusing it with an HTTP 4xx instead would wedge
        the SDK: when one chunk of a chunked ``forward_backward`` fails to submit, the SDK never sends chunk
        0 and its own turn counter never reaches the next call.
        """
        m = self.model(model_id)
        if seq_id is None:
            seq_id = max([m.next_seq - 1, *m.pending, *m.seqs.keys()]) + 1
        if seq_id not in m.seqs:
            if seq_id < m.next_seq:
                raise MockError("seq_id", f"{seq_id} is behind model {model_id}'s next seq_id {m.next_seq}")
            if seq_id > m.next_seq + MAX_SEQ_AHEAD:
                raise MockError("seq_id", f"{seq_id} is too far ahead of model {model_id}'s next seq_id {m.next_seq}")
        slot = seq_id

        def take() -> Submitted:
            try:
                op = build()
                fn = self._prepare(m, op)
            except Exception as exc:  # the refusal resolves the slot: its future fails, in order
                fut = self.new_future("Refused")
                if isinstance(exc, CookbookError):
                    fut.fail(str(as_mock_error(exc)), "user")
                else:  # a bug: still never a hole in the sequence
                    log.exception("mock server error while preparing a training request")
                    fut.fail(f"server error: {type(exc).__name__}: {exc}", "server")
                self._resolve_slot(m, slot, None, fut)
                return Submitted(fut.request_id, model_id)
            fut = self.new_future(op.request_type)
            self._resolve_slot(m, slot, fn, fut)
            return Submitted(fut.request_id, model_id)

        return m.seqs.once(seq_id, fingerprint, take)

    def _resolve_slot(
        self, m: ModelRecord, seq_id: int, fn: Callable[[Trainer], OpResult] | None, fut: FutureRecord | None
    ) -> None:
        m.pending[seq_id] = (fn, fut)
        self.spawn(self._drain(m))

    async def _drain(self, m: ModelRecord) -> None:
        if m.running:
            return
        m.running = True
        try:
            while m.next_seq in m.pending and not m.closed:
                fn, fut = m.pending.pop(m.next_seq)
                if fn is not None and fut is not None and not fut.done:
                    async with m.lock:
                        await self._ensure_loaded(m)
                        trainer = m.trainer
                        assert trainer is not None
                        result, err = await self._offload(lambda fn=fn, trainer=trainer: fn(trainer))  # type: ignore[misc]
                        await self._evict(keep=m)  # before the answer: a client never sees more resident
                    if err is not None:
                        fut.fail(*err)
                    else:
                        assert result is not None
                        fut.finish(result)
                m.next_seq += 1
        finally:
            m.running = False

    def _prepare(self, m: ModelRecord, op: TrainingOp) -> Callable[[Trainer], OpResult]:
        """Check ``op`` against model ``m`` (raises MockError) and return the closure run on the engine pool."""
        engine = self.engine
        if isinstance(op, ForwardBackwardOp):
            if op.loss_fn == "custom":
                raise unsupported(
                    "loss_fn",
                    "server-side custom losses are disabled (custom_loss_server_side=false); "
                    "use TrainingClient.forward_backward_custom",
                )
            data = op.data
            if op.loss_fn == "stable_reinforce":
                data = self.stable_reinforce_data(m.session_id, op.data)
            engine.validate_batch(m.spec, op.loss_fn, data, op.loss_fn_config)
            return lambda tr: engine.forward_backward(tr, op.loss_fn, data, op.loss_fn_config, op.forward_only)
        if isinstance(op, OptimStepOp):
            return lambda tr: OptimStepped(engine.optim_step(tr, op.hp))
        if isinstance(op, SaveOp):
            CheckpointStore.check_name(op.name)
            return lambda tr: self._save(m, tr, op)
        if isinstance(op, SamplerSnapshotOp):
            sess = self.session(m.session_id)
            sid = self.sampler_id_for(m.session_id, op.sampling_session_seq_id)
            if sid in self.samplers:
                raise conflict("sampling_session_seq_id", f"{op.sampling_session_seq_id} was already used in session {m.session_id}")

            def snapshot(tr: Trainer) -> SamplerCreated:
                self.samplers[sid] = SamplerRecord(sid, m.session_id, m.spec, tr.adapter.copy(), None)
                sess.sampler_ids.append(sid)
                return SamplerCreated(sid)

            return snapshot
        if isinstance(op, LoadOp):
            self.store.parse_path(op.path)  # existence is checked when it runs: an earlier queued op may save it
            return lambda tr: self._load_into(m, tr, op)
        raise unsupported(op.feature, f"not supported by the mock server; {op.hint}")

    def _save(self, m: ModelRecord, tr: Trainer, op: SaveOp) -> Saved:
        arrays = adapter_arrays(tr, with_optimizer=(op.kind == "weights"))
        meta = {
            "base_model": m.spec.name,
            "lora_rank": m.rank,
            "lora_config": m.lora_config,
            "lora_seed": m.lora_seed,
            "model_id": m.model_id,
        }
        ck = self.store.save(m.model_id, op.kind, op.name, arrays, meta, op.overwrite, op.ttl_seconds, op.user_metadata)
        return Saved(ck["tinker_path"], op.kind)

    def _load_into(self, m: ModelRecord, tr: Trainer, op: LoadOp) -> Loaded:
        ck, arrays = self.store.load(op.path)
        base = ck.get("meta", {}).get("base_model")
        if base != m.spec.name:
            raise MockError("path", f"checkpoint {op.path} is for base model {base!r}, this model is {m.spec.name!r}")
        if op.with_optimizer and "m_A" not in arrays:
            raise MockError("path", f"checkpoint {op.path} has no optimizer state")
        m.trainer = trainer_from_arrays(m.spec, arrays, op.with_optimizer, tr.lora_seed)
        m.rank = m.trainer.adapter.rank
        return Loaded(op.path, None)

    # ------------------------------------------------------------ sampling

    async def create_sampler(
        self,
        session_id: str,
        sampling_session_seq_id: int,
        model_path: str | None,
        base_model: str | None,
        fingerprint: bytes,
    ) -> str:
        sess = self.session(session_id)
        sid = self.sampler_id_for(session_id, sampling_session_seq_id)

        async def make() -> str:
            if model_path is not None:
                ck, arrays = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.store.load, model_path, "model_path"
                )
                spec = self.resolve(str(ck.get("meta", {}).get("base_model")))
                adapter = Adapter(np.asarray(arrays["A"], dtype=np.float64), np.asarray(arrays["B"], dtype=np.float64))
                if not spec.fits(adapter.A, adapter.B):
                    raise MockError("model_path", f"checkpoint {model_path} does not fit {spec.name}")
            elif base_model is not None:
                spec = self.resolve(base_model)
                adapter = Engine.empty_adapter(spec)
            else:
                raise MockError("model_path", "model_path or base_model: one is required")
            if sess.finished:
                raise MockError("session_id", f"session {session_id!r} has ended", Kind.GONE)
            self.samplers[sid] = SamplerRecord(sid, session_id, spec, adapter, model_path)
            sess.sampler_ids.append(sid)
            await self._evict()
            return sid

        task = sess.samplers.once(sampling_session_seq_id, fingerprint, lambda: asyncio.ensure_future(make()))
        return await task

    async def ad_hoc_sampler(self, model_path: str | None, base_model: str | None, fingerprint: bytes) -> str:
        """``asample`` without a sampling session: one sampler per (model_path, base_model) in the first session
        (``fingerprint`` identifies that pair)."""
        if not self.sessions:
            raise MockError("sampling_session_id", "no session exists; create one first")
        first = next(iter(self.sessions))
        key = 1_000_000 + int.from_bytes(fingerprint[:4], "little")
        return await self.create_sampler(first, key, model_path, base_model, fingerprint)

    async def submit_sample(
        self,
        sampler_id: str,
        seq_id: int | None,
        fingerprint: bytes,
        build: Callable[[BaseModelSpec], tuple[SampleSpec, bool]],
    ) -> Submitted:
        """Queue a sample request; ``build`` parses it against the sampler's base model and says whether the
        request carried its own seed."""
        sp = self.sampler(sampler_id)
        with contextlib.suppress(MockError):
            self.session(sp.session_id)
        if seq_id is not None:
            prev = sp.seqs.replay(seq_id, fingerprint)
            if prev is not None:
                if prev.refusal is not None:
                    raise prev.refusal
                assert prev.value is not None
                return prev.value
        async with sp.lock:
            await self._ensure_loaded(sp)
            adapter = sp.adapter
        assert adapter is not None

        def submit() -> Submitted:
            spec, seeded = build(sp.spec)
            if not seeded and seq_id is not None:
                # a retried request without a seed must get the same answer: derive it from its identity
                spec.seed = int.from_bytes(hashlib.sha256(sampler_id.encode() + fingerprint).digest()[:7], "little")
            elif not seeded:
                spec.seed = self.next_sample_seed()
            self._apply_script(sp, spec)
            decode = decoder_for(sp.spec) if spec.stop_strings else None
            engine, base = self.engine, sp.spec
            ids: list[str] = []  # filled below, before the work can start (it runs in a task of this loop)

            def work() -> SampleResult:
                result = engine.sample(base, adapter, spec, decode)
                if spec.record_stability_info:
                    self._record_stability(sp.session_id, spec.prompt, ids, result)
                return result

            fut = self.run_now("Sample", work)
            ids.extend(f"{fut.request_id}:{i}" for i in range(spec.num_samples))
            return Submitted(fut.request_id, None, tuple(ids))

        out = sp.seqs.once(seq_id, fingerprint, submit) if seq_id is not None else submit()
        await self._evict()
        return out

    # ------------------------------------------------------------ stability info (stable_reinforce)

    def _record_stability(self, session_id: str, prompt: np.ndarray, ids: list[str], result: SampleResult) -> None:
        now = time.monotonic()
        with self._stability_lock:
            self._expire_stability(now)
            for sequence_id, seq in zip(ids, result.sequences, strict=True):
                self.stability[sequence_id] = StabilityRecord(session_id, prompt, seq.tokens, seq.logprobs, now)

    def _expire_stability(self, now: float) -> None:
        while self.stability:
            first = next(iter(self.stability.values()))
            if now - first.last_used <= STABILITY_TTL_S:
                break
            self.stability.popitem(last=False)

    def stable_reinforce_data(self, session_id: str, data: list[DatumArrays]) -> list[DatumArrays]:
        """``data`` with what ``stable_reinforce`` takes from the recorded samples: ``sampled_mask`` (1 on the
        targets that provenance names as sampled tokens) and, there, the recorded sampler logprobs as
        ``logprobs``. Every datum must carry provenance naming sequences sampled with
        ``record_stability_info=True`` in ``session_id`` whose recorded tokens its spans reproduce; a use
        restarts each named sequence's day."""
        now = time.monotonic()
        out: list[DatumArrays] = []
        with self._stability_lock:
            self._expire_stability(now)
            used: set[str] = set()
            for i, d in enumerate(data):
                out.append(self._with_stability_info(session_id, d, f"data[{i}]", used))
            for sequence_id in used:
                self.stability[sequence_id].last_used = now
                self.stability.move_to_end(sequence_id)
        return out

    def _with_stability_info(self, session_id: str, d: DatumArrays, where: str, used: set[str]) -> DatumArrays:
        if "sampled_mask" in d.inputs:
            raise InvalidLossInput(
                f"{where}.loss_fn_inputs.sampled_mask",
                "not a Tinker input: the server derives the sampled tokens from the datum's provenance spans; remove it",
            )
        if d.model_input_spans is None or d.loss_fn_input_spans is None:
            raise InvalidLossInput(
                where,
                "stable_reinforce needs provenance on every datum: Datum.with_provenance(...) naming sequences sampled "
                "with record_stability_info=True (e.g. save_weights_and_get_sampling_client(record_stability_info=True)); "
                "this datum has none",
            )
        targets = d.inputs.get("target_tokens")
        if targets is None or targets.ndim != 1:
            raise InvalidLossInput(f"{where}.loss_fn_inputs.target_tokens", "stable_reinforce takes 1-D targets [N]")
        self._cover(session_id, d.model_input_spans, d.tokens, f"{where}.model_input_spans", used)
        mask, q = self._cover(session_id, d.loss_fn_input_spans, targets, f"{where}.loss_fn_input_spans", used)
        inputs = dict(d.inputs)
        inputs["sampled_mask"] = mask
        sent = inputs.get("logprobs")
        if sent is not None and sent.shape == mask.shape:
            inputs["logprobs"] = np.where(mask != 0, q, sent.astype(np.float64))
        return DatumArrays(d.tokens, inputs, d.images, d.model_input_spans, d.loss_fn_input_spans)

    def _cover(
        self, session_id: str, spans: tuple[ProvenanceSpan, ...], field_tokens: np.ndarray, where: str, used: set[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check that ``spans`` tile ``field_tokens`` and reproduce the recorded tokens; return the sampled-token
        mask and the recorded sampler logprobs (0 elsewhere) over the field."""
        n = int(field_tokens.shape[0])
        total = sum(s.length for s in spans)
        if total != n:
            raise InvalidLossInput(where, f"the spans cover {total} positions but the field has {n}; they must tile it exactly")
        mask = np.zeros(n)
        q = np.zeros(n)
        pos = 0
        for k, span in enumerate(spans):
            if span.length == 0:
                continue
            w = f"{where}[{k}]"
            rec = self.stability.get(span.sequence_id)
            if rec is None:
                raise InvalidLossInput(
                    f"{w}.sequence_id",
                    f"{span.sequence_id!r} names no recorded sample: sample it with record_stability_info=True in this "
                    "session and train on it within a day of its last use",
                )
            if rec.session_id != session_id:
                raise InvalidLossInput(
                    f"{w}.sequence_id",
                    f"{span.sequence_id!r} was sampled in session {rec.session_id}, not in this model's session "
                    f"{session_id}: provenance works only within one session",
                )
            source, kind = (rec.tokens, "sampled tokens") if span.sampled else (rec.prompt, "prompt")
            end = span.offset + span.length
            if end > source.shape[0]:
                raise InvalidLossInput(
                    w, f"covers positions [{span.offset}, {end}) of the {kind} of {span.sequence_id!r}, which has "
                    f"{source.shape[0]}",
                )
            seg, ref = field_tokens[pos : pos + span.length], source[span.offset : end]
            if not np.array_equal(seg, ref):
                j = int(np.flatnonzero(seg != ref)[0])
                raise InvalidLossInput(
                    w, f"position {pos + j} holds token {int(seg[j])} but position {span.offset + j} of the {kind} of "
                    f"{span.sequence_id!r} is {int(ref[j])}: the span does not reproduce the recorded tokens",
                )
            if span.sampled:
                mask[pos : pos + span.length] = 1.0
                q[pos : pos + span.length] = rec.logprobs[span.offset : end]
            used.add(span.sequence_id)
            pos += span.length
        return mask, q

    def _apply_script(self, sampler: SamplerRecord, spec: SampleSpec) -> None:
        if not self.scripted:
            return
        enc = encoder_for(sampler.spec)
        forced = []
        for _ in range(spec.num_samples):
            if not self.scripted:
                break
            item = self.scripted.popleft()
            forced.append(np.asarray(enc(item) if isinstance(item, str) else item, dtype=np.int64))
        spec.scripted = forced

    def next_sample_seed(self) -> int:
        n = next(self._sample_counter)
        return int.from_bytes(hashlib.sha256(f"sample-{n}".encode()).digest()[:7], "little")

    # ------------------------------------------------------------ checkpoints (REST)

    def run_meta(self, run_id: str) -> dict[str, Any]:
        meta = self.store.load_run(run_id)
        if meta is None:
            raise not_found("training_run_id", f"unknown training run {run_id!r}")
        return meta

    def set_public(self, run_id: str, checkpoint_id: str, public: bool) -> dict[str, Any]:
        self.run_meta(run_id)
        return self.store.update(run_id, checkpoint_id, public=public)

    def set_ttl(self, run_id: str, checkpoint_id: str, ttl_seconds: int | None) -> dict[str, Any]:
        self.run_meta(run_id)
        return self.store.update(run_id, checkpoint_id, expires_at=_expiry(ttl_seconds))

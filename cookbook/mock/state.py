"""Server state: sessions, training models, samplers, futures, per-model ``seq_id`` ordering, checkpoints, log.

Everything here runs on the server's asyncio loop; numpy work is sent to a thread pool. The engine is used
through a narrow interface (:class:`~cookbook.mock.engine.Engine` methods on plain arrays).

Futures and ordering (per training model):

* every training op carries a ``seq_id``; ops execute strictly in ``seq_id`` order (chunk 0 of a chunked
  ``forward_backward`` arrives last and waits for nothing; later chunks wait for it);
* a retried op with the same ``seq_id`` and the same payload gets the original ``request_id`` back;
  the same ``seq_id`` with a different payload is refused (400);
* an op refused at submission still consumes its ``seq_id``, so later ops of the client do not wait forever;
* a failed op's future answers ``{"error", "category"}`` (the SDK raises ``RequestFailedError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cookbook.errors import CookbookError
from cookbook.mock.engine import (
    AdamHyper,
    Adapter,
    BaseModelSpec,
    Engine,
    SampleSpec,
    Trainer,
    adapter_arrays,
    trainer_from_arrays,
)
from cookbook.mock.faults import FaultInjector
from cookbook.mock.models import ModelRegistry, decoder_for, encoder_for
from cookbook.mock.wire import (
    BadRequest,
    FwdBwdRequest,
    encode_forward_backward_output,
    encode_sample_response,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,199}$")
KINDS = {"weights": "training", "sampler_weights": "sampler"}
MAX_SEQ_AHEAD = 100_000
MAX_FUTURES = 50_000


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


# ------------------------------------------------------------------------------------------ records


@dataclass
class FutureRecord:
    request_id: str
    request_type: str
    event: asyncio.Event = field(default_factory=asyncio.Event)
    proto: bytes | None = None
    json_result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created: float = field(default_factory=time.monotonic)

    def finish(self, result: bytes | dict[str, Any]) -> None:
        if isinstance(result, bytes):
            self.proto = result
        else:
            self.json_result = result
        self.event.set()

    def fail(self, message: str, category: str) -> None:
        self.error = {"error": message, "category": category}
        self.event.set()


@dataclass
class SeqEntry:
    fingerprint: bytes
    request_id: str | None = None
    refusal: BadRequest | None = None


@dataclass
class ModelRecord:
    model_id: str
    session_id: str
    spec: BaseModelSpec
    trainer: Trainer
    lora_config: dict[str, Any]
    user_metadata: dict[str, str] | None = None
    next_seq: int = 1
    seqs: dict[int, SeqEntry] = field(default_factory=dict)
    pending: dict[int, tuple[Callable[[], bytes | dict[str, Any]] | None, FutureRecord | None]] = field(
        default_factory=dict
    )
    running: bool = False
    last_request_time: str = field(default_factory=now_iso)


@dataclass
class SamplerRecord:
    sampler_id: str
    session_id: str
    spec: BaseModelSpec
    adapter: Adapter
    model_path: str | None


@dataclass
class SessionRecord:
    session_id: str
    tags: list[str]
    user_metadata: dict[str, str] | None
    model_seq: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # model_seq_id -> (fp, request_id)
    sampler_seq: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # -> (fp, sampler_id)
    training_run_ids: list[str] = field(default_factory=list)
    sampler_ids: list[str] = field(default_factory=list)
    finished: bool = False
    last_heartbeat: float = field(default_factory=time.monotonic)


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


class CheckpointStore:
    """``<root>/runs/<run_id>/{run.json, weights/<name>.npz+.json, sampler_weights/<name>.npz+.json}``.

    Every file is written to a temporary name, fsynced, then ``os.replace``d; the ``.json`` is written last
    and marks a complete checkpoint, so a SIGKILL never leaves a half-written checkpoint visible.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def run_dir(self, run_id: str) -> Path:
        if not RUN_RE.match(run_id) or ".." in run_id:
            raise BadRequest(f"training run id {run_id!r} is not valid", "path")
        return self.root / "runs" / run_id

    @staticmethod
    def check_name(name: str, field_name: str = "path") -> str:
        if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
            raise BadRequest(
                f"{field_name}: checkpoint name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (no '/', no '..')",
                field_name,
            )
        return name

    def parse_path(self, path: str, field_name: str = "path") -> tuple[str, str, str]:
        """``tinker://<run>/<weights|sampler_weights>/<name>`` -> (run, kind, name)."""
        if not isinstance(path, str) or not path.startswith("tinker://"):
            raise BadRequest(f"{field_name}: {path!r} is not a tinker:// path", field_name)
        parts = path[len("tinker://") :].split("/")
        if len(parts) != 3 or parts[1] not in KINDS:
            raise BadRequest(
                f"{field_name}: {path!r} must look like tinker://<run_id>/weights/<name> or "
                "tinker://<run_id>/sampler_weights/<name>",
                field_name,
            )
        run, kind, name = parts
        self.run_dir(run)
        self.check_name(name, field_name)
        return run, kind, name

    @staticmethod
    def _atomic_write(path: Path, write: Callable[[Any], None]) -> int:
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

    def write_json(self, path: Path, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, indent=1, sort_keys=True).encode()
        self._atomic_write(path, lambda f: f.write(data))

    def save_run(self, run_id: str, meta: dict[str, Any]) -> None:
        self.write_json(self.run_dir(run_id) / "run.json", meta)

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        p = self.run_dir(run_id) / "run.json"
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

    def save(
        self, run_id: str, kind: str, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], overwrite: bool
    ) -> dict[str, Any]:
        d = self.run_dir(run_id) / kind
        self.check_name(name)
        jpath = d / f"{name}.json"
        if jpath.exists() and not overwrite:
            raise CookbookErrorUser(
                f"checkpoint tinker://{run_id}/{kind}/{name} already exists; pass overwrite=True or use a new name"
            )
        size = self._atomic_write(d / f"{name}.npz", lambda f: np.savez(f, allow_pickle=False, **arrays))
        ck = {
            "checkpoint_id": f"{kind}/{name}",
            "checkpoint_type": KINDS[kind],
            "time": now_iso(),
            "tinker_path": f"tinker://{run_id}/{kind}/{name}",
            "size_bytes": size,
            "public": False,
            "meta": meta,
        }
        self.write_json(jpath, ck)
        return ck

    def load(self, path: str, field_name: str = "path") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        run, kind, name = self.parse_path(path, field_name)
        d = self.run_dir(run) / kind
        try:
            ck = json.loads((d / f"{name}.json").read_text())
            with np.load(d / f"{name}.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError as exc:
            raise BadRequest(f"{field_name}: checkpoint {path} not found", field_name, status=404) from exc
        except (OSError, ValueError) as exc:
            raise BadRequest(f"{field_name}: checkpoint {path} is unreadable ({exc})", field_name, 404) from exc
        return ck, arrays

    def exists(self, path: str, field_name: str = "path") -> bool:
        run, kind, name = self.parse_path(path, field_name)
        return (self.run_dir(run) / kind / f"{name}.json").exists()

    def list_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        d = self.run_dir(run_id)
        out = []
        for kind in KINDS:
            for p in sorted((d / kind).glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    ck = json.loads(p.read_text())
                    ck.pop("meta", None)
                    out.append(ck)
        out.sort(key=lambda c: (c["time"], c["checkpoint_id"]))
        return out

    def delete(self, run_id: str, checkpoint_id: str) -> bool:
        parts = checkpoint_id.split("/")
        if len(parts) != 2 or parts[0] not in KINDS:
            raise BadRequest(f"checkpoint_id {checkpoint_id!r} must be weights/<name> or sampler_weights/<name>")
        kind, name = parts
        self.check_name(name, "checkpoint_id")
        d = self.run_dir(run_id) / kind
        found = (d / f"{name}.json").exists()
        for suffix in (".json", ".npz"):
            with contextlib.suppress(FileNotFoundError):
                (d / f"{name}{suffix}").unlink()
        return found

    def wipe(self) -> None:
        shutil.rmtree(self.root / "runs", ignore_errors=True)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)


class CookbookErrorUser(CookbookError, ValueError):
    """A request that failed while executing because of its input (reported as category "user")."""


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
    ) -> None:
        self.state_dir = Path(state_dir)
        self.store = CheckpointStore(self.state_dir)
        self.registry = registry or ModelRegistry()
        self.engine = engine or Engine()
        self.faults = faults or FaultInjector()
        self.long_poll_s = long_poll_s
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mock-engine")
        self.closing = asyncio.Event()
        self.instance = uuid.uuid4().hex[:8]
        self._clear()

    def _clear(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}
        self.models: dict[str, ModelRecord] = {}
        self.samplers: dict[str, SamplerRecord] = {}
        self.futures: OrderedDict[str, FutureRecord] = OrderedDict()
        self.log: deque[RequestLogEntry] = deque(maxlen=200_000)
        self.scripted: deque[list[int] | str] = deque()
        self.sample_seen: dict[tuple[str, int | None], tuple[bytes, str, list[str]]] = {}
        self._ids = itertools.count(1)
        self._sample_counter = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    def reset(self, wipe_checkpoints: bool = True) -> None:
        for fut in self.futures.values():
            if not fut.event.is_set():
                fut.fail("the mock server was reset", "server")
        self._clear()
        self.instance = uuid.uuid4().hex[:8]
        if wipe_checkpoints:
            self.store.wipe()

    def shutdown(self) -> None:
        self.closing.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ ids / futures

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{self.instance}-{next(self._ids)}"

    def new_future(self, request_type: str) -> FutureRecord:
        fut = FutureRecord(self.new_id("req"), request_type)
        self.futures[fut.request_id] = fut
        if len(self.futures) > MAX_FUTURES:  # drop the oldest completed futures
            for rid in list(itertools.islice(self.futures, len(self.futures) - MAX_FUTURES)):
                if self.futures[rid].event.is_set():
                    del self.futures[rid]
        return fut

    async def _offload(self, fn: Callable[[], Any]) -> tuple[Any, dict[str, str] | None]:
        """Run ``fn`` on the engine pool; return (result, None) or (None, {"error", "category"})."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, fn), None
        except BadRequest as exc:
            return None, {"error": exc.message, "category": "user"}
        except CookbookError as exc:
            return None, {"error": str(exc), "category": "user"}
        except RuntimeError as exc:  # executor shut down
            return None, {"error": f"server error: {exc}", "category": "server"}
        except Exception as exc:  # an engine bug must not take the server down
            return None, {"error": f"server error: {type(exc).__name__}: {exc}", "category": "server"}

    async def _execute(self, fut: FutureRecord, fn: Callable[[], bytes | dict[str, Any]]) -> None:
        result, err = await self._offload(fn)
        if err is not None:
            fut.fail(err["error"], err["category"])
        else:
            fut.finish(result)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run_now(self, request_type: str, fn: Callable[[], bytes | dict[str, Any]]) -> FutureRecord:
        fut = self.new_future(request_type)
        self.spawn(self._execute(fut, fn))
        return fut

    async def wait(self, request_id: str, timeout: float) -> FutureRecord:
        fut = self.futures.get(request_id)
        if fut is None:
            raise BadRequest(f"request_id: unknown request id {request_id!r}", "request_id", status=404)
        if fut.event.is_set():
            return fut
        waiter = asyncio.ensure_future(fut.event.wait())
        closer = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({waiter, closer}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()
        return fut

    # ------------------------------------------------------------ sessions

    def session(self, session_id: str, field_name: str = "session_id") -> SessionRecord:
        s = self.sessions.get(session_id)
        if s is None:
            raise BadRequest(f"{field_name}: unknown session {session_id!r}", field_name, status=404)
        return s

    def create_session(self, tags: list[str], user_metadata: dict[str, str] | None) -> str:
        sid = self.new_id("session")
        self.sessions[sid] = SessionRecord(sid, tags, user_metadata)
        return sid

    def model(self, model_id: str, field_name: str = "model_id") -> ModelRecord:
        m = self.models.get(model_id)
        if m is None:
            raise BadRequest(
                f"{field_name}: unknown model {model_id!r} (create it with create_lora_training_client first)",
                field_name,
                status=404,
            )
        return m

    # ------------------------------------------------------------ models

    def create_model(
        self,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora_config: dict[str, Any],
        user_metadata: dict[str, str] | None,
        fingerprint: bytes,
    ) -> str:
        sess = self.session(session_id)
        replayed = _replay(sess.model_seq, model_seq_id, fingerprint, "model_seq_id", f"in session {session_id}")
        if replayed is not None:
            return replayed
        spec = self.resolve(base_model)
        rank = int(lora_config["rank"])
        seed = int(lora_config.get("seed") or 0)
        model_id = f"{session_id}:train:{model_seq_id}"
        fut = self.new_future("CreateModel")
        sess.model_seq[model_seq_id] = (fingerprint, fut.request_id)
        meta = {
            "training_run_id": model_id,
            "base_model": spec.name,
            "model_owner": "mock",
            "is_lora": True,
            "lora_rank": rank,
            "lora_config": lora_config,
            "user_metadata": user_metadata,
            "created": now_iso(),
            "session_id": session_id,
        }

        def build() -> dict[str, Any]:
            trainer = self.engine.new_trainer(spec, rank, seed)
            self.store.save_run(model_id, meta)
            return {"model_id": model_id, "trainer": trainer}

        async def run() -> None:
            r, err = await self._offload(build)
            if err is not None:
                fut.fail(err["error"], err["category"])
                return
            self.models[model_id] = ModelRecord(model_id, session_id, spec, r["trainer"], lora_config, user_metadata)
            sess.training_run_ids.append(model_id)
            fut.finish({"model_id": model_id, "type": "create_model"})

        self.spawn(run())
        return fut.request_id

    def create_model_from_checkpoint(
        self,
        session_id: str,
        model_seq_id: int,
        path: str,
        with_optimizer: bool,
        user_metadata: dict[str, str] | None,
        fingerprint: bytes,
    ) -> str:
        sess = self.session(session_id)
        replayed = _replay(sess.model_seq, model_seq_id, fingerprint, "model_seq_id", f"in session {session_id}")
        if replayed is not None:
            return replayed
        _, kind, _ = self.store.parse_path(path)
        if not self.store.exists(path):
            raise BadRequest(f"path: checkpoint {path} not found", "path", status=404)
        if with_optimizer and kind != "weights":
            raise BadRequest(
                f"path: {path} is a sampler checkpoint without optimizer state; use a save_state() path",
                "path",
            )
        model_id = f"{session_id}:train:{model_seq_id}"
        fut = self.new_future("LoadWeights")
        sess.model_seq[model_seq_id] = (fingerprint, fut.request_id)

        def build() -> dict[str, Any]:
            ck, arrays = self.store.load(path)
            meta = ck.get("meta", {})
            spec = self.resolve(meta["base_model"])
            trainer = trainer_from_arrays(spec, arrays, with_optimizer, int(meta.get("lora_seed", 0)))
            run_meta = {
                "training_run_id": model_id,
                "base_model": spec.name,
                "model_owner": "mock",
                "is_lora": True,
                "lora_rank": trainer.adapter.rank,
                "lora_config": meta.get("lora_config", {"rank": trainer.adapter.rank}),
                "user_metadata": user_metadata,
                "created": now_iso(),
                "session_id": session_id,
                "loaded_from": path,
            }
            self.store.save_run(model_id, run_meta)
            return {"trainer": trainer, "spec": spec, "lora_config": run_meta["lora_config"]}

        async def run() -> None:
            r, err = await self._offload(build)
            if err is not None:
                fut.fail(err["error"], err["category"])
                return
            self.models[model_id] = ModelRecord(model_id, session_id, r["spec"], r["trainer"], r["lora_config"], user_metadata)
            sess.training_run_ids.append(model_id)
            fut.finish({"path": path, "model_id": model_id, "type": "load_weights"})

        self.spawn(run())
        return fut.request_id

    def resolve(self, base_model: str) -> BaseModelSpec:
        try:
            return self.registry.resolve(base_model)
        except CookbookError as exc:
            raise BadRequest(str(exc), "base_model", status=404) from exc

    # ------------------------------------------------------------ ordered ops

    def submit_ordered(
        self,
        model_id: str,
        seq_id: int | None,
        fingerprint: bytes,
        request_type: str,
        prepare: Callable[[ModelRecord], Callable[[], bytes | dict[str, Any]]],
    ) -> str:
        """Queue a training op in ``seq_id`` order; ``prepare`` validates (may raise BadRequest) and
        returns the closure that runs on the engine thread."""
        m = self.model(model_id)
        if seq_id is None:
            seq_id = max([m.next_seq - 1, *m.seqs]) + 1
        entry = m.seqs.get(seq_id)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise BadRequest(
                    f"seq_id: {seq_id} of model {model_id} was already used by a different request "
                    "(seq_ids must be unique per training client)",
                    "seq_id",
                )
            if entry.refusal is not None:
                raise entry.refusal
            assert entry.request_id is not None
            return entry.request_id
        if seq_id < m.next_seq:
            raise BadRequest(
                f"seq_id: {seq_id} is behind model {model_id}'s next seq_id {m.next_seq}", "seq_id"
            )
        if seq_id > m.next_seq + MAX_SEQ_AHEAD:
            raise BadRequest(f"seq_id: {seq_id} is too far ahead of {m.next_seq}", "seq_id")
        m.last_request_time = now_iso()
        try:
            fn = prepare(m)
        except BadRequest as exc:
            m.seqs[seq_id] = SeqEntry(fingerprint, refusal=exc)
            m.pending[seq_id] = (None, None)
            self.spawn(self._drain(m))
            raise
        except CookbookError as exc:
            bad = BadRequest(str(exc), _field_of(str(exc)))
            m.seqs[seq_id] = SeqEntry(fingerprint, refusal=bad)
            m.pending[seq_id] = (None, None)
            self.spawn(self._drain(m))
            raise bad from exc
        fut = self.new_future(request_type)
        m.seqs[seq_id] = SeqEntry(fingerprint, fut.request_id)
        m.pending[seq_id] = (fn, fut)
        self.spawn(self._drain(m))
        return fut.request_id

    async def _drain(self, m: ModelRecord) -> None:
        if m.running:
            return
        m.running = True
        try:
            while m.next_seq in m.pending:
                fn, fut = m.pending.pop(m.next_seq)
                if fn is not None and fut is not None:
                    await self._execute(fut, fn)
                m.next_seq += 1
        finally:
            m.running = False

    # ------------------------------------------------------------ training ops (closures)

    def op_forward_backward(self, req: FwdBwdRequest) -> Callable[[ModelRecord], Callable[[], bytes]]:
        def prepare(m: ModelRecord) -> Callable[[], bytes]:
            if req.loss_fn == "custom":
                raise BadRequest(
                    "loss_fn: server-side custom losses are disabled (custom_loss_server_side=false); "
                    "use TrainingClient.forward_backward_custom",
                    "loss_fn",
                )
            self.engine.validate_batch(m.spec, req.loss_fn, req.data, req.loss_fn_config)

            def run() -> bytes:
                res = self.engine.forward_backward(
                    m.trainer, req.loss_fn, req.data, req.loss_fn_config, req.forward_only
                )
                return encode_forward_backward_output(res)

            return run

        return prepare

    def op_optim_step(self, hp: AdamHyper) -> Callable[[ModelRecord], Callable[[], dict[str, Any]]]:
        def prepare(m: ModelRecord) -> Callable[[], dict[str, Any]]:
            return lambda: {"metrics": self.engine.optim_step(m.trainer, hp), "type": "optim_step"}

        return prepare

    def _ck_meta(self, m: ModelRecord) -> dict[str, Any]:
        return {
            "base_model": m.spec.name,
            "lora_rank": m.trainer.adapter.rank,
            "lora_config": m.lora_config,
            "lora_seed": m.trainer.lora_seed,
            "model_id": m.model_id,
        }

    def op_save(
        self, kind: str, name: str, overwrite: bool, user_metadata: dict[str, str] | None
    ) -> Callable[[ModelRecord], Callable[[], dict[str, Any]]]:
        CheckpointStore.check_name(name)

        def prepare(m: ModelRecord) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                arrays = adapter_arrays(m.trainer, with_optimizer=(kind == "weights"))
                meta = self._ck_meta(m)
                ck = self.store.save(m.model_id, kind, name, arrays, meta, overwrite)
                if user_metadata:
                    ck["user_metadata"] = user_metadata
                rtype = "save_weights" if kind == "weights" else "save_weights_for_sampler"
                return {"path": ck["tinker_path"], "type": rtype}

            return run

        return prepare

    def op_ephemeral_sampler(self, sampling_session_seq_id: int) -> Callable[[ModelRecord], Callable[[], dict[str, Any]]]:
        def prepare(m: ModelRecord) -> Callable[[], dict[str, Any]]:
            sess = self.session(m.session_id)
            sid = f"{m.session_id}:sample:{sampling_session_seq_id}"

            def run() -> dict[str, Any]:
                snap = m.trainer.adapter.copy()
                self.samplers[sid] = SamplerRecord(sid, m.session_id, m.spec, snap, None)
                sess.sampler_ids.append(sid)
                return {"sampling_session_id": sid, "type": "save_weights_for_sampler"}

            return run

        return prepare

    def op_load(self, path: str, with_optimizer: bool) -> Callable[[ModelRecord], Callable[[], dict[str, Any]]]:
        self.store.parse_path(path)

        def prepare(m: ModelRecord) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                ck, arrays = self.store.load(path)
                base = ck.get("meta", {}).get("base_model")
                if base != m.spec.name:
                    raise CookbookErrorUser(
                        f"path: checkpoint {path} is for base model {base!r}, this model is {m.spec.name!r}"
                    )
                if with_optimizer and "m_A" not in arrays:
                    raise CookbookErrorUser(f"path: checkpoint {path} has no optimizer state")
                m.trainer = trainer_from_arrays(m.spec, arrays, with_optimizer, m.trainer.lora_seed)
                return {"path": path, "type": "load_weights"}

            return run

        return prepare

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
        replayed = _replay(
            sess.sampler_seq, sampling_session_seq_id, fingerprint, "sampling_session_seq_id", f"in session {session_id}"
        )
        if replayed is not None:
            return replayed
        sid = f"{session_id}:sample:{sampling_session_seq_id}"
        if model_path is not None:
            ck, arrays = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.store.load, model_path, "model_path"
            )
            meta = ck.get("meta", {})
            spec = self.resolve(str(meta.get("base_model")))
            adapter = Adapter(np.asarray(arrays["A"], dtype=np.float64), np.asarray(arrays["B"], dtype=np.float64))
            if adapter.A.shape[0] != spec.d_model or adapter.B.shape[1] != spec.vocab_size:
                raise BadRequest(f"model_path: checkpoint {model_path} does not fit {spec.name}", "model_path")
        elif base_model is not None:
            spec = self.resolve(base_model)
            adapter = Engine.empty_adapter(spec)
        else:
            raise BadRequest("model_path or base_model: one is required", "model_path")
        self.samplers[sid] = SamplerRecord(sid, session_id, spec, adapter, model_path)
        sess.sampler_seq[sampling_session_seq_id] = (fingerprint, sid)
        sess.sampler_ids.append(sid)
        return sid

    def sampler(self, sampler_id: str, field_name: str = "sampling_session_id") -> SamplerRecord:
        s = self.samplers.get(sampler_id)
        if s is None:
            raise BadRequest(f"{field_name}: unknown sampling session {sampler_id!r}", field_name, status=404)
        return s

    def submit_sample(self, sampler: SamplerRecord, spec: SampleSpec) -> tuple[str, list[str]]:
        if spec.seed is None or spec.seed < 0:  # pragma: no cover - protocol fills it
            spec.seed = 0
        if self.scripted:
            enc = encoder_for(sampler.spec)
            forced = []
            for _ in range(spec.num_samples):
                if not self.scripted:
                    break
                item = self.scripted.popleft()
                forced.append(np.asarray(enc(item) if isinstance(item, str) else item, dtype=np.int64))
            spec.scripted = forced
        decode = decoder_for(sampler.spec) if spec.stop_strings else None
        engine = self.engine

        def run() -> bytes:
            return encode_sample_response(engine.sample(sampler.spec, sampler.adapter, spec, decode))

        fut = self.run_now("Sample", run)
        seq_ids = [f"{fut.request_id}:{i}" for i in range(spec.num_samples)]
        return fut.request_id, seq_ids

    def next_sample_seed(self) -> int:
        n = next(self._sample_counter)
        return int.from_bytes(hashlib.sha256(f"sample-{n}".encode()).digest()[:7], "little")


def _field_of(message: str) -> str | None:
    m = re.match(r"^([A-Za-z_][\w.\[\]]*):", message)
    return m.group(1) if m else None


def _replay(table: dict[int, tuple[bytes, str]], seq: int, fingerprint: bytes, field: str, where: str) -> str | None:
    """Idempotent creation by sequence number: the same request again returns the original id; a different
    request reusing the number is a 400 naming the field."""
    prev = table.get(seq)
    if prev is None:
        return None
    if prev[0] == fingerprint:
        return prev[1]
    raise BadRequest(f"{field}: {seq} was already used {where} by a different request", field)

"""``MockTinker``: the mock server in a background thread (uvicorn on a free 127.0.0.1 port).

Example::

    from cookbook.mock import MockTinker
    import tinker

    with MockTinker() as mock:                      # sets TINKER_BASE_URL / TINKER_API_KEY / HF_HUB_*
        service = tinker.ServiceClient()
        tc = service.create_lora_training_client(base_model="cookbook/tiny-test", rank=8)
        ...
        service.close()

``MockTinker`` also prepares a Hugging Face hub cache (``hub/models--Org--Name/{refs/main, snapshots/<sha>}``)
from the provisioned tokenizer folders and points ``HF_HUB_CACHE`` there with ``HF_HUB_OFFLINE=1`` so that
``SamplingClient.get_tokenizer()`` (which asks the hub for the base model's repo) works offline.
``TrainingClient.get_tokenizer()`` uses the absolute folder the server returns as ``tokenizer_id``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cookbook.errors import ConfigurationError
from cookbook.mock.faults import FaultInjector, Faults
from cookbook.mock.models import ModelRegistry, hf_repo_folders
from cookbook.mock.protocol import DEFAULT_MAX_BODY, ServerConfig, create_app
from cookbook.mock.state import DEFAULT_MAX_RESIDENT, DEFAULT_SESSION_IDLE_S, MockState, RequestLogEntry

T = TypeVar("T")

API_KEY = "tml-mock"


def build_hf_cache(hub: Path, repos: Mapping[str, tuple[Path, str]]) -> Path:
    """Write ``hub/models--Org--Name/{refs/main, snapshots/<sha>/...}`` (files are symlinked or copied)."""
    hub.mkdir(parents=True, exist_ok=True)
    for repo, (folder, mtype) in repos.items():
        commit = hashlib.sha1(f"cookbook-mock:{repo}:{folder}".encode()).hexdigest()
        base = hub / ("models--" + repo.replace("/", "--"))
        snap = base / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text(commit)
        for fname in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            src = Path(folder) / fname
            dst = snap / fname
            if src.exists() and not dst.exists():
                try:
                    dst.symlink_to(src.resolve())
                except OSError:
                    shutil.copyfile(src, dst)
        cfg = snap / "config.json"
        if not cfg.exists():
            cfg.write_text(json.dumps({"model_type": mtype}))
    return hub


def _free_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio then enables TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class MockTinker:
    """The mock Tinker server in a background thread; a context manager.

    Args:
        state_dir: where checkpoints live (default: a temporary folder removed on exit).
        port: 0 picks a free port.
        faults: a :class:`Faults`, its CLI string form, or a mapping.
        set_env: set ``TINKER_BASE_URL``, ``TINKER_API_KEY``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` while running
            (restored on exit).
        long_poll_s: how long ``retrieve_future`` holds a request before answering ``try_again``.
        compress_fwdbwd: ask the SDK to zstd-compress ``forward_backward`` bodies.
        session_idle_s: a session without a heartbeat or request for this long ends (its models leave memory).
        max_resident: at most this many trainers and samplers keep their arrays in memory; the least recently
            used others are spilled to ``<state_dir>/spill`` and reloaded transparently.
        head: the models' output layer: ``"auto"`` (a class-factored softmax from 32,768 tokens on, dense
            below), ``"dense"`` (a full softmax at every vocabulary: exact but slow at real ones) or ``"classed"``.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | str | Mapping[str, Any] | None = None,
        set_env: bool = True,
        long_poll_s: float = 20.0,
        compress_fwdbwd: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        workers: int = 4,
        hf_cache: bool = True,
        session_idle_s: float = DEFAULT_SESSION_IDLE_S,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        head: str = "auto",
    ) -> None:
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="tinker-mock-"))
        self.host = host
        self._port = port
        self.set_env = set_env
        self.hf_cache = hf_cache
        self.registry = ModelRegistry(head=head)
        self._injector = FaultInjector(_as_faults(faults))
        self.state = MockState(
            self.state_dir,
            self.registry,
            faults=self._injector,
            long_poll_s=long_poll_s,
            workers=workers,
            session_idle_s=session_idle_s,
            max_resident=max_resident,
        )
        self.config = ServerConfig(max_body_bytes=max_body_bytes, compress_fwdbwd=compress_fwdbwd)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._hf_dir: Path | None = None
        self._clients: list[Any] = []
        self._saved_constants: dict[str, Any] | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        return API_KEY

    def start(self) -> MockTinker:
        import uvicorn

        loop_ready = threading.Event()

        async def on_startup() -> None:
            self._loop = asyncio.get_running_loop()
            loop_ready.set()

        app = create_app(self.state, self.config, on_startup=[on_startup])
        sock = _free_socket(self.host, self._port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="tinker-mock-server", daemon=True
        )
        self._thread.start()
        if not loop_ready.wait(30):
            raise ConfigurationError("the mock Tinker server did not start within 30 s")
        while not server.started:
            if not self._thread.is_alive():
                raise ConfigurationError("the mock Tinker server thread exited during start-up")
            loop_ready.wait(0.005)
        if self.set_env:
            self._apply_env()
        return self

    def stop(self) -> None:
        self._close_clients()
        if self._server is not None:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self.state.closing.set)
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.state.shutdown()
        self._restore_env()
        if self._hf_dir is not None:
            shutil.rmtree(self._hf_dir, ignore_errors=True)
            self._hf_dir = None
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._server = None
        self._thread = None

    def __enter__(self) -> MockTinker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- environment

    def _apply_env(self) -> None:
        env: dict[str, str] = {"TINKER_BASE_URL": self.base_url, "TINKER_API_KEY": self.api_key}
        if self.hf_cache:
            self._hf_dir = Path(tempfile.mkdtemp(prefix="tinker-mock-hf-"))
            hub = build_hf_cache(self._hf_dir / "hub", hf_repo_folders(self.registry))
            env.update(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        for k, v in env.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        self._patch_hf_constants(env)

    def _patch_hf_constants(self, env: Mapping[str, str]) -> None:
        """huggingface_hub reads its env at import time: update its constants if already imported."""
        import sys

        constants = sys.modules.get("huggingface_hub.constants")
        if constants is None or "HF_HUB_CACHE" not in env:
            return
        self._saved_constants = {k: getattr(constants, k, None) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
        constants.HF_HUB_CACHE = env["HF_HUB_CACHE"]  # type: ignore[attr-defined]
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]

    def _restore_env(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env.clear()
        import sys

        saved = getattr(self, "_saved_constants", None)
        constants = sys.modules.get("huggingface_hub.constants")
        if saved and constants is not None:
            for k, v in saved.items():
                setattr(constants, k, v)
        self._saved_constants = None

    def refresh_hf_cache(self) -> None:
        """Re-create the HF cache entries (after registering models with tokenizers)."""
        if self._hf_dir is not None:
            build_hf_cache(self._hf_dir / "hub", hf_repo_folders(self.registry))

    # ---------------------------------------------------------------- control

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the server loop (state is owned by that loop) and return its result."""
        if self._loop is None:
            return fn()

        async def run() -> T:
            return fn()

        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return fut.result(timeout)

    def _close_clients(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close("success").result(timeout=10)
        self._clients.clear()

    def reset(self) -> None:
        """Forget sessions, models, samplers, futures, checkpoints, scripts, the log and the faults."""
        self._close_clients()
        self.call(self.state.reset)
        self._injector.set(Faults())

    def set_faults(self, faults: Faults | str | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Replace the fault configuration (``set_faults(error_rates={500: 0.3}, seed=1)``)."""
        if faults is None:
            faults = Faults.from_mapping(kwargs) if kwargs else Faults()
        self._injector.set(_as_faults(faults))

    @property
    def injected_faults(self) -> list[tuple[str, int]]:
        return list(self._injector.injected)

    def script_samples(self, completions: Iterable[Sequence[int] | str]) -> None:
        """Queue completions: the next sampled sequences return exactly these (one per sequence)."""
        items: list[list[int] | str] = [c if isinstance(c, str) else [int(x) for x in c] for c in completions]
        self.call(lambda: self.state.scripted.extend(items))

    def register_base_model(
        self, name: str, vocab_size: int, tokenizer_dir: str | Path | None = None, eos_token_id: int | None = None
    ) -> None:
        """Serve another base model (kept across :meth:`reset`)."""
        self.registry.register(name, vocab_size, tokenizer_dir, eos_token_id)
        if tokenizer_dir is not None:
            self.refresh_hf_cache()

    @property
    def requests(self) -> list[RequestLogEntry]:
        """The request log (every HTTP request, in arrival order)."""
        return self.call(lambda: list(self.state.log))

    def requests_to(self, endpoint: str) -> list[RequestLogEntry]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def service_client(self, **kwargs: Any) -> Any:
        """A ``tinker.ServiceClient`` on this server, closed by :meth:`reset` / :meth:`stop`."""
        import tinker

        client = tinker.ServiceClient(base_url=self.base_url, api_key=self.api_key, **kwargs)
        self._clients.append(client)
        return client

    def rest_client(self) -> Any:
        """A ``tinker.RestClient`` on this server."""
        import tinker

        return tinker.RestClient(base_url=self.base_url, api_key=self.api_key)


def _as_faults(f: Faults | str | Mapping[str, Any] | None) -> Faults:
    if f is None:
        return Faults()
    if isinstance(f, Faults):
        return f
    if isinstance(f, str):
        return Faults.parse(f)
    return Faults.from_mapping(f)


@contextlib.contextmanager
def mock_tinker(**kwargs: Any) -> Iterator[MockTinker]:
    with MockTinker(**kwargs) as m:
        yield m

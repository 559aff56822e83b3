"""``cookbook mock serve``: run the mock Tinker server in the foreground.

    cookbook mock serve --port 8000 --state-dir ./tinker-state [--faults "429=0.05,latency_ms=2"]

Then point the SDK at it: ``TINKER_BASE_URL=http://127.0.0.1:8000 TINKER_API_KEY=tml-mock``.
With ``--hf-cache DIR`` the server also writes an offline Hugging Face cache for the provisioned tokenizers
into ``DIR/hub``; export ``HF_HUB_CACHE=DIR/hub HF_HUB_OFFLINE=1`` in the client for
``SamplingClient.get_tokenizer()``.
"""

from __future__ import annotations

import argparse
import sys

from cookbook.mock import CLASSED_VOCAB, HEADS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = a free port; default 8000)")
    parser.add_argument("--state-dir", default="./tinker-mock-state", help="checkpoint directory (kept)")
    parser.add_argument(
        "--faults",
        default="",
        help="fault injection, e.g. 'latency_ms=5,429=0.1,500=0.05,try_again=0.2,lost_reply=0.1,"
        "paths=asample|forward_backward,seed=1'",
    )
    parser.add_argument("--long-poll", type=float, default=20.0, help="retrieve_future hold time in seconds")
    parser.add_argument("--compress-fwdbwd", action="store_true", help="ask the SDK for zstd forward_backward")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="request body limit (MB)")
    parser.add_argument("--hf-cache", default=None, help="also write an offline HF hub cache into DIR/hub")
    parser.add_argument(
        "--session-idle", type=float, default=300.0,
        help="end a session after this many seconds without a heartbeat or request (default 300)",
    )
    parser.add_argument(
        "--max-resident", type=int, default=8,
        help="trainers/samplers kept in memory; others are spilled to STATE_DIR/spill (default 8)",
    )
    parser.add_argument(
        "--head", choices=HEADS, default="auto",
        help=f"the models' output layer: auto (default) factors the softmax into classes from {CLASSED_VOCAB:,} "
        "tokens on (fast at real vocabularies); dense is a full softmax at every size (slow: seconds per step)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 1 << 20


def _fixed_mmap_threshold() -> None:
    """glibc: serve every allocation of 1 MiB or more with its own mmap, returned to the system when freed.

    By default glibc raises that threshold (up to 32 MiB) each time a large block is freed, after which the
    engine's per-request arrays come from per-thread heaps that keep their peak: a long-lived server's RSS then
    stepped up by tens of MB whenever a new worker thread got its own heap (measured with
    benchmarks/bench_mock_memory.py: +9.6% after round 2 in one run, 0% in the next; with the fixed threshold
    RSS is flat and about half). Other C libraries: nothing to do.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        pass


def run(args: argparse.Namespace) -> int:
    import os

    # The server runs several requests at once; multi-threaded BLAS inside each one oversubscribes the cores
    # (measured: 2-3x slower at 150k vocabularies). numpy is not imported yet in this process, so this takes
    # effect; an explicit setting in the environment wins.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _fixed_mmap_threshold()
    import socket
    from pathlib import Path

    import uvicorn

    from cookbook.mock.faults import FaultInjector, Faults
    from cookbook.mock.models import ModelRegistry
    from cookbook.mock.protocol import ServerConfig, create_app
    from cookbook.mock.server import build_hf_cache, hf_repo_folders
    from cookbook.mock.state import MockState

    faults = Faults.parse(args.faults) if args.faults else Faults()
    state_dir = Path(args.state_dir).expanduser().resolve()
    registry = ModelRegistry(head=args.head)
    state = MockState(
        state_dir,
        registry,
        faults=FaultInjector(faults),
        long_poll_s=args.long_poll,
        session_idle_s=args.session_idle,
        max_resident=args.max_resident,
    )
    if state.store.removed_partial:
        print(f"removed {state.store.removed_partial} partial file(s) left by an interrupted save", flush=True)
    config = ServerConfig(max_body_bytes=int(args.max_body_mb * 1024 * 1024), compress_fwdbwd=args.compress_fwdbwd)
    if args.hf_cache:
        hub = build_hf_cache(Path(args.hf_cache).expanduser().resolve() / "hub", hf_repo_folders(registry))
        print(f"HF cache: export HF_HUB_CACHE={hub} HF_HUB_OFFLINE=1", flush=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio then enables TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]

    async def announce() -> None:
        print(f"mock Tinker server on http://{args.host}:{port} (state: {state_dir})", flush=True)

    app = create_app(state, config, on_startup=[announce])
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=2)
    )
    try:
        server.run(sockets=[sock])
    finally:
        state.shutdown()
    sys.stdout.flush()
    return 0

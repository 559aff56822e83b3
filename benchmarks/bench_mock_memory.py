"""Mock server memory under repeated sessions: RSS of a ``cookbook mock serve`` process after each round of
create -> train -> save -> close at a real vocabulary (``Qwen/Qwen3-8B``, V = 151,936).

    python benchmarks/bench_mock_memory.py [--rounds 6] [--clients 4] [--rank 16]

Each round opens ``--clients`` ServiceClients, each creates a LoRA training client, runs forward_backward +
optim_step, saves its state (weights + optimizer, kept on disk) and closes its ServiceClient. A closed
session's models leave memory, so RSS must level off: the printed ratio is the growth from the end of round 2
to the end of the last round, divided by the RSS after round 1 (target <= 0.05). Before session end freed
models, RSS grew by about 150 MB per model and round.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import tinker
from tinker import types

MODEL = "Qwen/Qwen3-8B"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/<pid>/status (Linux only)")


def _start_server(state_dir: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "cookbook.cli", "mock", "serve", "--port", "0", "--state-dir", state_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"mock Tinker server on (http://\S+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError(f"the mock server did not start: exit code {proc.wait()}")


def _datum(rng: np.random.Generator, n: int = 32) -> types.Datum:
    toks = rng.integers(0, 150_000, size=n + 1)
    return types.Datum(
        model_input=types.ModelInput.from_ints(toks[:-1].tolist()),
        loss_fn_inputs={"target_tokens": toks[1:].astype(np.int64), "weights": np.ones(n, dtype=np.float32)},
    )


def _round(url: str, r: int, clients: int, rank: int) -> None:
    rng = np.random.default_rng(r)
    services = [tinker.ServiceClient(base_url=url, api_key="tml-mock") for _ in range(clients)]
    pending = [s.create_lora_training_client(base_model=MODEL, rank=rank, seed=i) for i, s in enumerate(services)]
    tcs = [p.result() for p in pending]
    futs = [tc.forward_backward([_datum(rng)], "cross_entropy") for tc in tcs]
    opts = [tc.optim_step(types.AdamParams(learning_rate=1e-3)) for tc in tcs]
    for f in futs + opts:
        f.result()
    for i, tc in enumerate(tcs):
        tc.save_state(f"round{r}-client{i}").result()
    for s in services:
        s.close("success").result()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    logging.getLogger("tinker").setLevel(logging.ERROR)  # the SDK logs every long-poll retry
    if args.rounds < 5:
        ap.error("--rounds must be >= 5")
    with tempfile.TemporaryDirectory(prefix="bench-mock-memory-") as state:
        proc, url = _start_server(state)
        try:
            rss = [_rss_mb(proc.pid)]
            print(f"{MODEL} (V = 151,936), {args.clients} clients x rank {args.rank} per round")
            print(f"  start     RSS {rss[0]:8.1f} MB")
            for r in range(1, args.rounds + 1):
                t0 = time.perf_counter()
                _round(url, r, args.clients, args.rank)
                rss.append(_rss_mb(proc.pid))
                print(f"  round {r:<3} RSS {rss[-1]:8.1f} MB   ({time.perf_counter() - t0:5.1f} s)")
            growth = (rss[-1] - rss[2]) / rss[1]
            print(f"growth after round 2 / RSS after round 1 = {growth:.3f} (target <= 0.05)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

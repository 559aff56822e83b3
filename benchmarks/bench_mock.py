"""Mock Tinker server benchmark (run by ``nox -s bench``; ``python benchmarks/bench_mock.py``).

Figures, all through the unmodified ``tinker`` SDK over HTTP to an in-process ``MockTinker``:

1. round-trip latency of a small ``forward_backward`` (1 datum x 8 tokens, tiny model): p50 / p95,
   next to a bare HTTP round trip (``GET /api/v1/healthz`` with httpx) as the in-run baseline;
2. sampling throughput (generated tokens/s) with 32 concurrent ``sample`` requests, tiny model and a
   151,936-token (Qwen3-size) vocabulary;
3. ``forward_backward`` throughput (tokens/s) for a batch of 8 x 256 tokens on a 151,936 vocabulary;
4. peak memory: Python allocations during (3) (tracemalloc) and the process's max RSS.

No assertions: numbers are printed (the README quotes them with the machine they came from).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
from tinker import types

from cookbook.mock import MockTinker

BIG = "bench/vocab-151936"
BIG_VOCAB = 151_936


def _datum(tokens: list[int]) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": np.asarray(tokens[1:], dtype=np.int64),
            "weights": np.ones(len(tokens) - 1, dtype=np.float32),
        },
    )


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    with MockTinker(hf_cache=False) as mock:
        mock.register_base_model(BIG, BIG_VOCAB)
        service = mock.service_client()

        # 1. latency
        with httpx.Client(base_url=mock.base_url) as http:
            for _ in range(20):
                http.get("/api/v1/healthz")
            bare = []
            for _ in range(200):
                t0 = time.perf_counter()
                http.get("/api/v1/healthz")
                bare.append((time.perf_counter() - t0) * 1000)
        tc = service.create_lora_training_client(base_model="cookbook/tiny-test", rank=8, seed=0).result()
        small = [_datum(list(range(1, 10)))]
        for _ in range(10):
            tc.forward_backward(small, "cross_entropy").result()
        rtt = []
        for _ in range(200):
            t0 = time.perf_counter()
            tc.forward_backward(small, "cross_entropy").result()
            rtt.append((time.perf_counter() - t0) * 1000)
        p50, p95 = _pct(rtt, 50), _pct(rtt, 95)
        print(f"forward_backward round trip (SDK, 1x8 tokens): p50 {p50:.2f} ms, p95 {p95:.2f} ms "
              f"(target p50 < 10 ms: {'OK' if p50 < 10 else 'MISSED'})")
        print(f"bare HTTP round trip (httpx GET healthz):      p50 {statistics.median(bare):.2f} ms; "
              f"ratio SDK fwd/bwd / bare = {p50 / statistics.median(bare):.1f}x")

        # 2. sampling throughput, 32 concurrent requests
        for base, label in (("cookbook/tiny-test", "vocab 512"), (BIG, f"vocab {BIG_VOCAB:,}")):
            sampler = service.create_sampling_client(base_model=base).result()
            params = types.SamplingParams(max_tokens=64, stop=[], seed=0)
            prompt = types.ModelInput.from_ints(list(range(1, 33)))
            sampler.sample(prompt, 1, params).result()  # warm-up (base weights)

            def one(i: int, sampler=sampler, prompt=prompt) -> int:
                p = types.SamplingParams(max_tokens=64, stop=[], seed=i)
                return sum(len(s.tokens) for s in sampler.sample(prompt, 1, p).result().sequences)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                total = sum(pool.map(one, range(32)))
            dt = time.perf_counter() - t0
            print(f"sampling, 32 concurrent requests x 64 tokens, {label}: {total / dt:,.0f} tokens/s ({dt:.2f} s)")

        # 3. forward_backward throughput, 8 x 256 tokens, 151,936 vocabulary
        big = service.create_lora_training_client(base_model=BIG, rank=8, seed=0).result()
        rng = np.random.default_rng(0)
        batch = [_datum(rng.integers(0, BIG_VOCAB, 257).tolist()) for _ in range(8)]
        big.forward_backward(batch[:1], "cross_entropy").result()  # warm-up
        tracemalloc.start()
        t0 = time.perf_counter()
        reps = 2
        for _ in range(reps):
            big.forward_backward(batch, "cross_entropy").result()
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"forward_backward 8 x 256 tokens, vocab {BIG_VOCAB:,}: {reps * 8 * 256 / dt:,.0f} tokens/s "
              f"({dt / reps:.2f} s per call)")
        print(f"peak Python allocations during that step: {peak / 2**20:.0f} MiB; "
              f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

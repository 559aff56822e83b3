"""Mock engine speed at a real vocabulary (V = 151,936), as a fraction of what this machine's float64 allows.

Run by ``nox -s bench`` (or ``python benchmarks/bench_mock_engine.py``). In one process, interleaved over a few
rounds (the machine is shared: each figure is the best of its rounds, limits and engines run the same amount of
work back to back, and times are CPU seconds of the process, so other jobs on the cores do not count), it
measures:

* the **limits**, from this machine's BLAS and numpy on the exact shapes the engine needs (GEMMs into
  preallocated outputs; ``exp`` over the same number of values, one cache-sized chunk per call):
  - forward_backward, without recomputing the forward in backward: per row block of ``rb`` positions, the
    GEMMs ``H·W`` and ``(sH·A)·B`` (forward), ``(sH·A)ᵀ·dz`` and ``dz·Bᵀ`` (backward) and one ``exp`` per
    logit at in-cache throughput; limit tokens/s = rb / (sum of those times);
  - sampling, batched: per decoding step for ``n`` live sequences, the GEMMs ``[n, d]·[d, V]`` and
    ``[n, r]·[r, V]`` plus one ``exp`` per logit; limit tokens/s = n / step time;
* the **engine** (``cookbook.mock.engine.Engine``) on the same work: forward_backward of 2 datums x 256 tokens
  (cross_entropy, LoRA rank 32) and 4 concurrent sample requests x 8 samples x 8 tokens;
* **before**: the same work on the engine of commit ``BASELINE`` (loaded from git when this is a checkout),
  which recomputed the forward in backward, copied ``[W; B]`` per datum and decoded one GEMV per token per
  sample.

It prints achieved / limit for both (targets: forward_backward >= 0.7, sampling >= 0.6). These are figures of the
dense head (``head="dense"``, a full softmax over V, what ``cookbook mock serve --head dense`` serves). From
32,768 tokens on the mock serves the class-factored head by default (``cookbook.mock.classed``); the last lines
run the same work on it and print its speed-up over the dense head in the same run. No assertions.
BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1`` unless set), as under ``cookbook mock serve``. If
``OPENBLAS_CORETYPE`` is set it is printed: limits and engine then use the same (slower) kernel, so the ratios
stay fair; to see absolute speed, unset ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for this command only.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import types as pytypes
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the BLAS thread setting)

from cookbook.mock import engine as eng  # noqa: E402
from cookbook.mock.engine import BaseModelSpec, DatumArrays, Engine  # noqa: E402

BASELINE = "85d4e68"  # the engine before the batched / chunked rewrite
V = 151_936
RANK = 32
TOKENS = 256
DATUMS = 2
REQUESTS, SAMPLES, MAX_TOKENS = 4, 8, 8
ROUNDS = 3


clock = time.process_time  # CPU seconds of this process (all threads): robust to other load on shared cores


def baseline_engine() -> pytypes.ModuleType | None:
    """The engine module of commit BASELINE, if this is a git checkout that has it."""
    root = Path(__file__).resolve().parents[1]
    try:
        src = subprocess.run(
            ["git", "-C", str(root), "show", f"{BASELINE}:cookbook/mock/engine.py"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    spec = importlib.util.spec_from_loader("baseline_engine", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    exec(compile(src, f"{BASELINE}:cookbook/mock/engine.py", "exec"), mod.__dict__)
    return mod


def _limit_run(gemms: list[tuple[tuple[int, int], tuple[int, int]]], rows: int, cols: int, elems: int,
               repeat: int) -> float:
    """CPU seconds of ``repeat`` times: the ``gemms`` (BLAS, preallocated outputs, no page faults) and ``exp``
    over ``elems`` values one in-cache ``[rows, cols]`` chunk per call: the work with no overhead at all, timed
    as one run of about the engine's duration (so both see the same share of the shared cores)."""
    rng = np.random.default_rng(4)
    ops = [(rng.standard_normal(a), rng.standard_normal(b), np.empty((a[0], b[1]))) for a, b in gemms]
    chunk = -np.abs(rng.standard_normal((rows, cols)))
    scratch = np.empty_like(chunk)
    calls = max(1, round(elems / chunk.size))
    t0 = clock()
    for _ in range(repeat):
        for x, y, out in ops:
            np.matmul(x, y, out=out)
        for _ in range(calls):
            np.exp(chunk, out=scratch)
    return (clock() - t0) * elems / (calls * chunk.size)


def fb_limit(d: int, rb: int) -> float:
    """Seconds per token of forward_backward's arithmetic (forward and backward GEMMs, one exp per logit)."""
    gemms = [((rb, d), (d, V)), ((rb, RANK), (RANK, V)), ((RANK, rb), (rb, V)), ((rb, V), (V, RANK))]
    blocks = DATUMS * -(-TOKENS // rb)
    return _limit_run(gemms, rb, eng.CACHE_ELEMS // rb, rb * V, blocks) / (blocks * rb)


def sample_limit(d: int, n: int) -> float:
    """Seconds per token of batched decoding steps for ``n`` sequences (two GEMMs and one exp per logit)."""
    gemms = [((n, d), (d, V)), ((n, RANK), (RANK, V))]
    return _limit_run(gemms, n, eng.SAMPLE_CHUNK, n * V, MAX_TOKENS) / (n * MAX_TOKENS)


def fb_run(module: pytypes.ModuleType, spec: object, data: list[object]) -> float:
    engine = module.Engine()
    trainer = engine.new_trainer(spec, rank=RANK, seed=0)
    trainer.adapter.B[...] = np.random.default_rng(2).normal(scale=0.02, size=trainer.adapter.B.shape)
    engine.base(spec)
    engine.forward_backward(trainer, "cross_entropy", data[:1], None, False)  # warm-up (buffers)
    t0 = clock()
    engine.forward_backward(trainer, "cross_entropy", data, None, False)
    return (clock() - t0) / (DATUMS * TOKENS)


def sample_run(module: pytypes.ModuleType, spec: object) -> float:
    engine = module.Engine()
    adapter = engine.new_adapter(spec, RANK, 0)
    adapter.B[...] = np.random.default_rng(3).normal(scale=0.02, size=adapter.B.shape)
    engine.base(spec)
    prompt = np.arange(1, 33, dtype=np.int64)
    counts = [0] * REQUESTS

    def one(i: int) -> None:
        req = module.SampleSpec(prompt, num_samples=SAMPLES, max_tokens=MAX_TOKENS, seed=i)
        counts[i] = sum(len(s.tokens) for s in engine.sample(spec, adapter, req).sequences)

    one(0)  # warm-up (buffers)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(REQUESTS)]
    t0 = clock()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (clock() - t0) / sum(counts)


def main() -> None:
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"mock engine at V = {V:,}, LoRA rank {RANK}, float64, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}"
          + (f", OPENBLAS_CORETYPE={coretype}" if coretype else ""))
    old = baseline_engine()
    if old is None:
        print(f"(no git checkout with {BASELINE}: 'before' figures are not measured)")
    spec = BaseModelSpec("bench/vocab-151936", vocab_size=V, head="dense")
    classed_spec = BaseModelSpec("bench/vocab-151936", vocab_size=V, head="classed")
    rng = np.random.default_rng(0)
    data = [DatumArrays(rng.integers(0, V, TOKENS), {"target_tokens": rng.integers(0, V, TOKENS),
                                                      "weights": np.ones(TOKENS)}) for _ in range(DATUMS)]
    old_spec = old.BaseModelSpec(spec.name, vocab_size=V) if old else None
    old_data = [old.DatumArrays(x.tokens, x.inputs) for x in data] if old else None
    rb = max(1, min(eng.ROW_BLOCK, eng.BLOCK_ELEMS // V))
    n = REQUESTS * SAMPLES
    fig: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        fig[name] = min(fig.get(name, float("inf")), value)

    Engine().base(spec)  # warm-up: base weights and the speed notice
    for _ in range(ROUNDS):
        keep("fb_limit", fb_limit(spec.d_model, rb))
        keep("fb_new", fb_run(eng, spec, list(data)))
        if old is not None:
            keep("fb_old", fb_run(old, old_spec, list(old_data or [])))
        keep("s_limit", sample_limit(spec.d_model, n))
        keep("s_new", sample_run(eng, spec))
        if old is not None:
            keep("s_old", sample_run(old, old_spec))
        keep("fb_classed", fb_run(eng, classed_spec, list(data)))
        keep("s_classed", sample_run(eng, classed_spec))

    def line(what: str, limit: float, new: float, old_t: float | None, target: float) -> None:
        ratio = limit / new
        before = f"; before {1 / old_t:,.0f} tokens/s = {limit / old_t:.2f} of the limit, speed-up {old_t / new:.1f}x" \
            if old_t else ""
        print(f"{what}: {1 / new:,.0f} tokens/s, limit {1 / limit:,.0f} tokens/s -> achieved/limit {ratio:.2f} "
              f"(target >= {target}: {'OK' if ratio >= target else 'MISSED'}){before}")

    line(f"forward_backward {DATUMS} x {TOKENS} tokens (limit: no recompute)", fig["fb_limit"], fig["fb_new"],
         fig.get("fb_old"), 0.7)
    line(f"sampling {REQUESTS} requests x {SAMPLES} samples x {MAX_TOKENS} tokens (limit: batched GEMM, n={n})",
         fig["s_limit"], fig["s_new"], fig.get("s_old"), 0.6)
    lay = classed_spec.layout
    assert lay is not None
    for what, key in (("forward_backward", "fb"), ("sampling", "s")):
        new, dense = fig[f"{key}_classed"], fig[f"{key}_new"]
        print(f"{what}, class-factored head ({lay.K} classes x {lay.S} tokens, the default here): "
              f"{1 / new:,.0f} tokens/s, {dense / new:.0f}x the dense head")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

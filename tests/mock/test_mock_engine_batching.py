"""The fast engine's exactness: batching, chunking and the backward memory budget never change a result's bits.

Oracles: the same engine computing each request alone (a sample must not depend on what it was batched with),
the recompute path (a kept forward must give the gradients a recomputed one gives), and the BLAS property the
decoder relies on (a GEMM row's bits do not depend on the other rows when the row count is a multiple of 8).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cookbook.mock.engine as eng
from cookbook.mock.engine import BaseModelSpec, DatumArrays, Engine, SampleSpec

SMALL = BaseModelSpec("test/batching-small", vocab_size=37, d_model=6, eos_token_id=36)
WIDE = BaseModelSpec("test/batching-wide", vocab_size=5000, d_model=8, eos_token_id=4999)  # 3 sample chunks
CLASSED = BaseModelSpec("test/batching-classed", vocab_size=5000, d_model=8, eos_token_id=4999, head="classed")


def _adapter(engine: Engine, spec: BaseModelSpec, seed: int = 0) -> eng.Adapter:
    adapter = engine.new_adapter(spec, 4, seed)
    adapter.B[...] = np.random.default_rng(seed + 1).normal(scale=0.5, size=adapter.B.shape)
    return adapter


def _requests(spec: BaseModelSpec) -> list[SampleSpec]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(5):
        prompt = rng.integers(0, spec.vocab_size, size=3 + i)
        params = [
            {},
            {"temperature": 0.7},
            {"top_k": 5},
            {"top_p": 0.9, "topk_sample_logprobs": 3},
            {"stop_tokens": frozenset({int(prompt[0]), 3, 4})},
        ][i]
        out.append(SampleSpec(prompt, num_samples=1 + i % 3, max_tokens=6 + 3 * i, seed=100 + i, **params))
    return out


def _key(res: eng.SampleResult) -> list[tuple[bytes, bytes, str, bytes | None]]:
    return [
        (s.tokens.tobytes(), s.logprobs.tobytes(), s.stop_reason, None if s.topk_logprobs is None else s.topk_logprobs.tobytes())
        for s in res.sequences
    ]


@pytest.mark.parametrize("spec", [SMALL, WIDE, CLASSED], ids=["V37", "V5000", "V5000-classed"])
def test_a_request_batched_with_others_gives_the_bits_it_gives_alone(spec: BaseModelSpec) -> None:
    engine = Engine()
    adapter = _adapter(engine, spec)
    reqs = _requests(spec)
    alone = [_key(engine.sample(spec, adapter, r)) for r in reqs]
    # deterministic batching: every other request is waiting in the batch before the first step
    bw, first_result, first = engine._prepare(spec, adapter, reqs[0], None)
    others = [engine._prepare(spec, adapter, r, None) for r in reqs[1:]]
    batch = eng._DecodeBatch(spec, adapter, bw)
    batch.pending.extend(job for _, _, job in others)
    batch.users = 1
    engine._batches[(spec, id(adapter))] = batch
    engine._run_batched(spec, adapter, bw, first)
    for _, _, job in [(None, None, first), *others]:
        while not job.done:  # the first request's thread stops driving once its own job is done
            engine._run_batched(spec, adapter, bw, next(j for _, _, j in others if not j.done))
    batched = []
    for result, job in [(first_result, first), *((r, j) for _, r, j in others)]:
        assert job.error is None
        result.sequences = [s.finish() for s in job.seqs]
        batched.append(_key(result))
    assert batched == alone


@pytest.mark.parametrize("spec", [WIDE, CLASSED], ids=["dense", "classed"])
def test_each_sample_is_independent_of_num_samples(spec: BaseModelSpec) -> None:
    """Sample i of a request is the sample a request with the same seed draws at index i, whatever n is."""
    engine = Engine()
    adapter = _adapter(engine, spec)
    prompt = np.array([7, 8, 9])
    four = engine.sample(spec, adapter, SampleSpec(prompt, num_samples=4, max_tokens=12, seed=3))
    one = engine.sample(spec, adapter, SampleSpec(prompt, num_samples=1, max_tokens=12, seed=3))
    assert _key(one) == _key(four)[:1]
    nine = engine.sample(spec, adapter, SampleSpec(prompt, num_samples=9, max_tokens=12, seed=3))
    assert _key(nine)[:4] == _key(four)


def test_concurrent_threads_get_their_sequential_results() -> None:
    engine = Engine()
    adapter = _adapter(engine, WIDE)
    reqs = _requests(WIDE) * 2
    expected = [_key(engine.sample(WIDE, adapter, r)) for r in reqs]
    got: list[object] = [None] * len(reqs)
    start = threading.Barrier(len(reqs))

    def run(i: int) -> None:
        start.wait()
        got[i] = _key(engine.sample(WIDE, adapter, reqs[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a sampling thread never finished"
    assert got == expected
    assert not engine._batches  # every batch is torn down when its last request leaves


def test_a_failing_request_fails_alone() -> None:
    """A scripted token outside the vocabulary fails its own request; a batched neighbour is unaffected."""
    engine = Engine()
    adapter = _adapter(engine, SMALL)
    good = SampleSpec(np.array([1, 2]), num_samples=2, max_tokens=5, seed=1)
    bad = SampleSpec(np.array([1, 2]), num_samples=1, max_tokens=5, seed=1, scripted=[np.array([3, 999])])
    alone = _key(engine.sample(SMALL, adapter, good))
    bw, result, job = engine._prepare(SMALL, adapter, good, None)
    _, _, bad_job = engine._prepare(SMALL, adapter, bad, None)
    batch = eng._DecodeBatch(SMALL, adapter, bw)
    batch.pending.append(bad_job)
    batch.users = 1
    engine._batches[(SMALL, id(adapter))] = batch
    engine._run_batched(SMALL, adapter, bw, job)
    assert bad_job.done and isinstance(bad_job.error, eng.DataError)
    result.sequences = [s.finish() for s in job.seqs]
    assert job.error is None and _key(result) == alone


@pytest.mark.parametrize("loss", ["cross_entropy", "ppo"])
def test_kept_and_recomputed_forward_give_identical_gradients(monkeypatch: pytest.MonkeyPatch, loss: str) -> None:
    rng = np.random.default_rng(9)
    V = WIDE.vocab_size

    def datum(n: int) -> DatumArrays:
        inputs = {"target_tokens": rng.integers(0, V, n)}
        if loss == "cross_entropy":
            inputs["weights"] = rng.uniform(0, 1, n)
        else:
            inputs["logprobs"] = -rng.uniform(1, 9, n)
            inputs["advantages"] = rng.normal(size=n)
        return DatumArrays(rng.integers(0, V, n), inputs)

    data = [datum(n) for n in (40, 3, 17)]
    monkeypatch.setattr(eng, "BLOCK_ELEMS", 8 * V)  # row blocks of 8 positions
    grads = []
    for store in (eng.STORE_ELEMS, 0, 16 * V):  # everything kept, nothing kept, the first two blocks kept
        monkeypatch.setattr(eng, "STORE_ELEMS", store)
        engine = Engine()
        tr = engine.new_trainer(WIDE, rank=4, seed=2)
        tr.adapter.B[...] = np.random.default_rng(4).normal(scale=0.3, size=tr.adapter.B.shape)
        out = engine.forward_backward(tr, loss, data, None, False)
        grads.append((tr.grad_A.copy(), tr.grad_B.copy(), [x.tobytes() for x in out.logprobs]))
    ref = grads[0]
    for other in grads[1:]:
        assert other[2] == ref[2]
        np.testing.assert_allclose(other[0], ref[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(other[1], ref[1], rtol=1e-12, atol=1e-14)


def test_gemm_rows_do_not_depend_on_the_other_rows() -> None:
    """The BLAS property the decoder relies on: with a row count that is a multiple of ROW_TILE, a row's
    logits are bit-identical whatever the other rows are and however many there are."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((40, 3000))
    row = rng.standard_normal(40)
    ref = None
    for n in range(eng.ROW_TILE, 8 * eng.ROW_TILE + 1, eng.ROW_TILE):
        for pos in (0, n // 2, n - 1):
            H = rng.standard_normal((n, 40))
            H[pos] = row
            got = (H @ W)[pos].tobytes()
            ref = ref or got
            assert got == ref, (n, pos)


def test_real_vocabulary_gets_one_speed_notice(caplog: pytest.LogCaptureFixture) -> None:
    """A real-size vocabulary logs one warning (per base model and process); a toy one logs nothing."""
    engine = Engine()
    with caplog.at_level("WARNING", logger="cookbook.mock"):
        engine.base(SMALL)
        assert not caplog.records
        big = BaseModelSpec("test/notice-vocab", vocab_size=eng.NOTICE_VOCAB)
        engine.base(big)
        engine.base(big)
    records = [r for r in caplog.records if r.name == "cookbook.mock"]
    assert len(records) == 1 and records[0].levelname == "WARNING"
    assert f"{eng.NOTICE_VOCAB:,}" in records[0].getMessage()  # names the vocabulary it estimates for

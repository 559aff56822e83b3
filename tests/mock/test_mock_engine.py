"""The numpy engine on its own: exact gradients for every loss, chunking invariance, AdamW, sampling."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from cookbook.errors import ConfigurationError, DataError
from cookbook.mock import engine as eng
from cookbook.mock.engine import AdamHyper, BaseModelSpec, DatumArrays, Engine, SampleSpec

SPEC = BaseModelSpec("test/synthetic", vocab_size=37, d_model=6, eos_token_id=36)
LOSSES = ["cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce"]


def _datum(rng: np.random.Generator, n: int, loss: str, two_d: bool = False) -> DatumArrays:
    tokens = rng.integers(0, SPEC.vocab_size, size=n)
    if two_d:
        tt = rng.integers(0, SPEC.vocab_size, size=(n, 3))
        return DatumArrays(tokens, {"target_tokens": tt, "weights": rng.uniform(-1, 1, size=(n, 3))})
    inputs = {"target_tokens": rng.integers(0, SPEC.vocab_size, size=n)}
    if loss == "cross_entropy":
        inputs["weights"] = rng.uniform(-1, 1, size=n)
    else:
        inputs["logprobs"] = -rng.uniform(1.0, 5.0, size=n)
        inputs["advantages"] = rng.normal(size=n)
        if loss == "gspo":
            inputs["sequence_ratio_mask"] = (rng.random(n) < 0.7).astype(np.float64)
        if loss == "stable_reinforce":  # what the server derives from provenance (the state layer; here given)
            inputs["sampled_mask"] = (rng.random(n) < 0.7).astype(np.float64)
    return DatumArrays(tokens, inputs)


def _trainer(engine: Engine, seed: int = 0):
    tr = engine.new_trainer(SPEC, rank=3, seed=seed)
    tr.adapter.B[...] = np.random.default_rng(seed + 1).normal(scale=0.3, size=tr.adapter.B.shape)
    return tr


def _loss(engine: Engine, tr, loss: str, data, cfg) -> float:
    return engine.forward_backward(tr, loss, data, cfg, forward_only=True).metrics["loss:sum"]


@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy_2d", "importance_sampling", "ppo", "dro", "stable_reinforce"])
def test_gradients_match_finite_differences(loss: str):
    """Losses without stop-gradients: the parameter gradient is the derivative of ``loss:sum``."""
    engine = Engine()
    rng = np.random.default_rng(7)
    name = "cross_entropy" if loss == "cross_entropy_2d" else loss
    data = [_datum(rng, n, name, two_d=loss == "cross_entropy_2d") for n in (5, 3)]
    cfg = {"beta": 0.1} if name == "dro" else ({"clip_low_threshold": 0.5, "clip_high_threshold": 1.5} if name in ("ppo", "cispo", "gspo") else None)
    if name == "stable_reinforce":
        cfg = {"kl_coeff": 0.3}
    tr = _trainer(engine)
    engine.forward_backward(tr, name, data, cfg, forward_only=False)
    gA, gB = tr.grad_A.copy(), tr.grad_B.copy()
    h = 1e-6
    for param, grad in ((tr.adapter.A, gA), (tr.adapter.B, gB)):
        idx = list(zip(*np.unravel_index(rng.choice(param.size, 8, replace=False), param.shape)))
        for ix in idx:
            old = param[ix]
            param[ix] = old + h
            up = _loss(engine, tr, name, data, cfg)
            param[ix] = old - h
            down = _loss(engine, tr, name, data, cfg)
            param[ix] = old
            fd = (up - down) / (2 * h)
            assert fd == pytest.approx(grad[ix], rel=1e-4, abs=1e-6), (loss, ix)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_equals_cross_entropy_surrogate(loss: str):
    """For every loss (including stop-gradient ones, cispo and gspo) the engine's parameter gradient equals
    the gradient of cross-entropy with weights = -dL/dlogprob from cookbook.losses (the chain rule)."""
    from cookbook.losses import tinker_loss

    engine = Engine()
    rng = np.random.default_rng(11)
    data = [_datum(rng, n, loss) for n in (6, 4)]
    cfg = {"clip_low_threshold": 0.5, "clip_high_threshold": 1.5} if loss in ("ppo", "cispo", "gspo") else None
    tr = _trainer(engine)
    out = engine.forward_backward(tr, loss, data, cfg, forward_only=False)
    surrogate = []
    for d, lp in zip(data, out.logprobs):
        g = tinker_loss(loss, lp, d.inputs, cfg).grad
        surrogate.append(DatumArrays(d.tokens, {"target_tokens": d.inputs["target_tokens"], "weights": -np.asarray(g)}))
    ce = _trainer(engine)
    engine.forward_backward(ce, "cross_entropy", surrogate, None, forward_only=False)
    np.testing.assert_allclose(tr.grad_B, ce.grad_B, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tr.grad_A, ce.grad_A, rtol=1e-12, atol=1e-14)
    assert np.abs(tr.grad_B).sum() > 0


def test_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(3)
    data = [_datum(rng, n, "cross_entropy") for n in (9, 4)]
    ref_engine = Engine()
    ref = _trainer(ref_engine)
    out_ref = ref_engine.forward_backward(ref, "cross_entropy", data, None, False)
    monkeypatch.setattr(eng, "VOCAB_CHUNK", 5)
    monkeypatch.setattr(eng, "ROW_BLOCK", 2)
    monkeypatch.setattr(eng, "BLOCK_ELEMS", 3 * SPEC.vocab_size)
    chunked = _trainer(ref_engine)
    out = ref_engine.forward_backward(chunked, "cross_entropy", data, None, False)
    for a, b in zip(out.logprobs, out_ref.logprobs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(chunked.grad_B, ref.grad_B, atol=1e-12)
    np.testing.assert_allclose(chunked.grad_A, ref.grad_A, atol=1e-12)


def test_logprobs_are_a_distribution_and_depend_on_context():
    engine = Engine()
    bw = engine.base(SPEC)
    adapter = engine.new_adapter(SPEC, 2, 0)
    H = engine._hidden(bw, np.array([1, 2, 3]))
    Hx, Wx = engine._extended(bw, adapter, H)
    lse = engine._lse(Hx, Wx)
    z = Hx @ Wx
    np.testing.assert_allclose(np.exp(z - lse[:, None]).sum(axis=1), 1.0, atol=1e-12)
    H2 = engine._hidden(bw, np.array([5, 2, 3]))  # same previous token at position 2, different history
    assert not np.allclose(H[2], H2[2]) and not np.allclose(H[1], H2[1])


def test_adamw_matches_torch_semantics():
    engine = Engine()
    tr = engine.new_trainer(SPEC, rank=2, seed=0)
    rng = np.random.default_rng(0)
    hp = AdamHyper(learning_rate=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, grad_clip_norm=0.5)
    # reference written out per element (torch.optim.AdamW, clip_grad_norm_ with 1e-6)
    p = {"A": tr.adapter.A.copy(), "B": tr.adapter.B.copy()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for step in (1, 2, 3):
        gA, gB = rng.normal(size=tr.grad_A.shape), rng.normal(size=tr.grad_B.shape)
        tr.grad_A[...] = gA
        tr.grad_B[...] = gB
        engine.optim_step(tr, hp)
        norm = math.sqrt((gA**2).sum() + (gB**2).sum())
        coef = min(1.0, hp.grad_clip_norm / (norm + 1e-6))
        for k, g in (("A", gA * coef), ("B", gB * coef)):
            p[k] = p[k] * (1 - hp.learning_rate * hp.weight_decay)
            m[k] = hp.beta1 * m[k] + (1 - hp.beta1) * g
            v[k] = hp.beta2 * v[k] + (1 - hp.beta2) * g * g
            mhat = m[k] / (1 - hp.beta1**step)
            vhat = v[k] / (1 - hp.beta2**step)
            p[k] = p[k] - hp.learning_rate * mhat / (np.sqrt(vhat) + hp.eps)
        np.testing.assert_allclose(tr.adapter.A, p["A"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(tr.adapter.B, p["B"], rtol=1e-12, atol=1e-14)
        assert not tr.grad_A.any() and not tr.grad_B.any()  # zeroed after the step


def test_validation_names_the_field():
    engine = Engine()
    rng = np.random.default_rng(1)
    d = _datum(rng, 4, "cross_entropy")
    d.inputs["weights"][1] = np.nan
    with pytest.raises(DataError, match=r"data\[0\]\.loss_fn_inputs\.weights.*NaN"):
        engine.validate_batch(SPEC, "cross_entropy", [d], None)
    d2 = _datum(rng, 4, "ppo")
    with pytest.raises(ConfigurationError, match=r"loss_fn_config\.epsilon"):
        engine.validate_batch(SPEC, "ppo", [d2], {"epsilon": 0.2})
    d3 = _datum(rng, 4, "cross_entropy")
    d3.tokens[0] = SPEC.vocab_size
    with pytest.raises(DataError, match="outside the vocabulary"):
        engine.validate_batch(SPEC, "cross_entropy", [d3], None)


def test_sampling_controls():
    engine = Engine()
    adapter = Engine.empty_adapter(SPEC)
    prompt = np.array([3, 4, 5])
    greedy = engine.sample(SPEC, adapter, SampleSpec(prompt, max_tokens=6, temperature=0.0))
    topk1 = engine.sample(SPEC, adapter, SampleSpec(prompt, max_tokens=6, top_k=1, seed=5))
    top_p = engine.sample(SPEC, adapter, SampleSpec(prompt, max_tokens=6, top_p=1e-9, seed=6))
    assert list(greedy.sequences[0].tokens) == list(topk1.sequences[0].tokens) == list(top_p.sequences[0].tokens)
    a = engine.sample(SPEC, adapter, SampleSpec(prompt, num_samples=3, max_tokens=8, seed=1))
    b = engine.sample(SPEC, adapter, SampleSpec(prompt, num_samples=3, max_tokens=8, seed=1))
    assert [s.tokens.tolist() for s in a.sequences] == [s.tokens.tolist() for s in b.sequences]
    # top-k restricts the support: with top_k=2 every token is one of the two most likely ones
    res = engine.sample(SPEC, adapter, SampleSpec(prompt, num_samples=20, max_tokens=1, top_k=2, seed=2))
    bw = engine.base(SPEC)
    z = engine._hidden(bw, prompt)[-1] @ bw.W
    top2 = set(np.argsort(-z)[:2].tolist())
    assert {int(s.tokens[0]) for s in res.sequences} <= top2
    # the sampled-token logprob is the temperature-1 logprob
    s = res.sequences[0]
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    assert s.logprobs[0] == pytest.approx(z[s.tokens[0]] - lse, abs=1e-12)


def test_memory_bounded_for_200k_vocab():
    engine = Engine()
    spec = BaseModelSpec("test/big", vocab_size=200_000)
    tr = engine.new_trainer(spec, rank=8, seed=0)
    rng = np.random.default_rng(0)
    data = [DatumArrays(rng.integers(0, 200_000, 96), {"target_tokens": rng.integers(0, 200_000, 96),
                                                       "weights": np.ones(96)})]
    engine.base(spec)  # frozen weights: 2 x 200k x 32 float64 = 102 MB, allocated once
    tracemalloc.start()
    try:
        engine.forward_backward(tr, "cross_entropy", data, None, False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"

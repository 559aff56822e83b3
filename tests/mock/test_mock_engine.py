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
#: the same vocabulary through the class-factored head (6 classes of 7 tokens, the last one padded by 5)
CLASSED = BaseModelSpec("test/synthetic-classed", vocab_size=37, d_model=6, eos_token_id=36, head="classed")
HEADS = pytest.mark.parametrize("spec", [SPEC, CLASSED], ids=["dense", "classed"])
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


def _trainer(engine: Engine, seed: int = 0, spec: BaseModelSpec = SPEC):
    tr = engine.new_trainer(spec, rank=3, seed=seed)
    tr.adapter.B[...] = np.random.default_rng(seed + 1).normal(scale=0.3, size=tr.adapter.B.shape)
    return tr


def _loss(engine: Engine, tr, loss: str, data, cfg) -> float:
    return engine.forward_backward(tr, loss, data, cfg, forward_only=True).metrics["loss:sum"]


@HEADS
@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy_2d", "importance_sampling", "ppo", "dro", "stable_reinforce"])
def test_gradients_match_finite_differences(loss: str, spec: BaseModelSpec):
    """Losses without stop-gradients: the parameter gradient is the derivative of ``loss:sum``."""
    engine = Engine()
    rng = np.random.default_rng(7)
    name = "cross_entropy" if loss == "cross_entropy_2d" else loss
    data = [_datum(rng, n, name, two_d=loss == "cross_entropy_2d") for n in (5, 3)]
    cfg = {"beta": 0.1} if name == "dro" else ({"clip_low_threshold": 0.5, "clip_high_threshold": 1.5} if name in ("ppo", "cispo", "gspo") else None)
    if name == "stable_reinforce":
        cfg = {"kl_coeff": 0.3}
    tr = _trainer(engine, spec=spec)
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


@HEADS
@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_equals_cross_entropy_surrogate(loss: str, spec: BaseModelSpec):
    """For every loss (including stop-gradient ones, cispo and gspo) the engine's parameter gradient equals
    the gradient of cross-entropy with weights = -dL/dlogprob from cookbook.losses (the chain rule)."""
    from cookbook.losses import tinker_loss

    engine = Engine()
    rng = np.random.default_rng(11)
    data = [_datum(rng, n, loss) for n in (6, 4)]
    cfg = {"clip_low_threshold": 0.5, "clip_high_threshold": 1.5} if loss in ("ppo", "cispo", "gspo") else None
    tr = _trainer(engine, spec=spec)
    out = engine.forward_backward(tr, loss, data, cfg, forward_only=False)
    surrogate = []
    for d, lp in zip(data, out.logprobs):
        g = tinker_loss(loss, lp, d.inputs, cfg).grad
        surrogate.append(DatumArrays(d.tokens, {"target_tokens": d.inputs["target_tokens"], "weights": -np.asarray(g)}))
    ce = _trainer(engine, spec=spec)
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
    spec = BaseModelSpec("test/big", vocab_size=200_000, head="dense")
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


def test_real_vocabularies_get_the_class_factored_head():
    """From CLASSED_VOCAB tokens on the model factors its softmax (cookbook.mock.classed); below it is dense."""
    from cookbook.mock.classed import CLASSED_VOCAB, Layout

    assert BaseModelSpec("t/small", vocab_size=CLASSED_VOCAB - 1).layout is None
    lay = BaseModelSpec("t/qwen", vocab_size=248_320).layout
    assert lay == Layout(248_320, 499, 498) and lay.K * lay.S >= 248_320 > (lay.K - 1) * lay.S
    assert BaseModelSpec("t/qwen", vocab_size=248_320, head="dense").layout is None
    assert BaseModelSpec("t/qwen", vocab_size=248_320).head_width == 499 * 498 + 498


def test_classed_logprobs_are_a_distribution_and_match_the_learner():
    """Closed form: Σ_t p(t) = 1 over the real tokens (padding excluded), and the learner's target logprob is
    log p(class) + log p(token | class) computed from the raw logits."""
    from cookbook.mock import classed

    engine = Engine()
    tr = _trainer(engine, spec=CLASSED)
    bw = engine.base(CLASSED)
    lay = CLASSED.layout
    assert lay is not None and lay.K * lay.S > lay.V  # a padded last class
    tokens = np.array([1, 2, 3, 36, 35])
    targets = np.array([36, 0, 35, 7, 13])
    out = engine.forward_backward(tr, "cross_entropy", [DatumArrays(tokens, {"target_tokens": targets,
                                                                             "weights": np.ones(5)})], None, True)
    H = engine._hidden(bw, tokens)
    HA = tr.adapter.scale * (H @ tr.adapter.A)
    z = H @ bw.W + HA @ tr.adapter.B
    for i, t in enumerate(targets):
        zc = z[i, lay.K * lay.S:]
        c = t // lay.S
        zb = z[i, c * lay.S: min(lay.V, (c + 1) * lay.S)]
        expect = zc[c] - np.log(np.exp(zc).sum()) + z[i, t] - np.log(np.exp(zb).sum())
        assert out.logprobs[0][i] == pytest.approx(expect, abs=1e-12)
        full = classed.full_logprobs(lay, bw.W, tr.adapter.B, H[i], HA[i])
        assert full.shape == (lay.V,) and np.exp(full).sum() == pytest.approx(1.0, abs=1e-12)
        assert full[t] == pytest.approx(out.logprobs[0][i], abs=1e-12)


def test_classed_sampler_draws_from_the_model():
    """Empirical frequencies of 4,000 one-token samples match the model's probabilities (and the sampler's
    logprob of a drawn token is the learner's)."""
    from cookbook.mock import classed

    engine = Engine()
    tr = _trainer(engine, spec=CLASSED)
    bw = engine.base(CLASSED)
    prompt = np.array([4, 9, 30])
    res = engine.sample(CLASSED, tr.adapter, SampleSpec(prompt, num_samples=4000, max_tokens=1, seed=5))
    H = engine._hidden(bw, prompt)
    p = np.exp(classed.full_logprobs(bw.spec.layout, bw.W, tr.adapter.B, H[-1],
                                     tr.adapter.scale * (H[-1] @ tr.adapter.A)))
    counts = np.bincount([int(s.tokens[0]) for s in res.sequences], minlength=CLASSED.vocab_size)
    assert np.abs(counts / 4000 - p).max() < 0.03
    for s in res.sequences[:20]:
        assert s.logprobs[0] == pytest.approx(np.log(p[s.tokens[0]]), abs=1e-12)
    # top-k restricts the support to the k most likely tokens of the factored distribution
    top = engine.sample(CLASSED, tr.adapter, SampleSpec(prompt, num_samples=50, max_tokens=1, top_k=3, seed=6))
    assert {int(s.tokens[0]) for s in top.sequences} <= set(np.argsort(-p)[:3].tolist())


def test_classed_gradients_do_not_depend_on_how_the_batch_is_split():
    """One forward_backward over three datums, or three calls of one, accumulate bit-identical gradients."""
    rng = np.random.default_rng(21)
    data = [_datum(rng, n, "ppo") for n in (7, 2, 5)]
    engine = Engine()
    whole = _trainer(engine, spec=CLASSED)
    engine.forward_backward(whole, "ppo", data, None, False)
    split = _trainer(engine, spec=CLASSED)
    for d in data:
        engine.forward_backward(split, "ppo", [d], None, False)
    assert whole.grad_A.tobytes() == split.grad_A.tobytes()
    assert whole.grad_B.tobytes() == split.grad_B.tobytes()

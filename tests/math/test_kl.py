"""KL estimators (incl. Schulman's Gaussian Monte-Carlo table), diagnostics, penalty and distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookbook.errors import ConfigurationError, DataError
from cookbook.rl import kl

logprob_pairs = st.integers(1, 10).flatmap(
    lambda n: st.tuples(st.lists(st.floats(-30, 0), min_size=n, max_size=n), st.lists(st.floats(-30, 0), min_size=n, max_size=n))
)


@given(logprob_pairs)
def test_k3_is_non_negative(pair) -> None:
    logp, logq = pair
    assert np.all(kl.k3(logp, logq) >= 0)
    assert np.all(kl.k2(logp, logq) >= 0)


@given(logprob_pairs)
def test_k3_definition(pair) -> None:
    logp, logq = (np.array(x) for x in pair)
    lr = logp - logq
    np.testing.assert_allclose(kl.k3(logp, logq), np.exp(lr) - 1 - lr, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(kl.k1(logp, logq), -lr)


def test_k3_accurate_for_tiny_log_ratio() -> None:
    # (r - 1) - log r ~= x^2/2 for small x; the naive exp(x) - 1 - x loses every digit here
    assert kl.k3([1e-9], [0.0])[0] == pytest.approx(0.5e-18, rel=1e-6)


def gaussian_logpdf(x: np.ndarray, mu: float) -> np.ndarray:
    return -0.5 * (x - mu) ** 2 - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize(
    ("mu", "true_kl", "k1_rel_std", "k3_rel_std"),
    [(0.1, 0.005, 20.0, 1.42), (1.0, 0.5, 2.0, 1.70)],  # Schulman's table (re-computed in anchors.md 3.4)
)
def test_monte_carlo_gaussians(mu, true_kl, k1_rel_std, k3_rel_std) -> None:
    """x ~ q = N(0,1), p = N(mu,1): k1 and k3 are unbiased for KL(q||p) = mu^2/2 with the blog's spreads."""
    n = 2_000_000
    x = np.random.default_rng(20200101).standard_normal(n)
    logq, logp = gaussian_logpdf(x, 0.0), gaussian_logpdf(x, mu)
    for estimator, rel_std in ((kl.k1, k1_rel_std), (kl.k3, k3_rel_std)):
        values = estimator(logp, logq)
        std = values.std()
        standard_error = std / math.sqrt(n)
        assert abs(values.mean() - true_kl) < 5 * standard_error  # unbiased (5 sigma)
        assert std / true_kl == pytest.approx(rel_std, rel=0.02)
    k2 = kl.k2(logp, logq)
    assert k2.mean() > true_kl  # k2 is biased upwards here
    assert kl.k3(logp, logq).std() < kl.k1(logp, logq).std()


def test_kl_sample_train_pools_tokens() -> None:
    q = [np.array([-1.0, -2.0, 0.0]), np.array([-0.5])]
    lp = [np.array([-1.5, -1.0, -3.0]), np.array([-1.0])]
    m = [np.array([1, 1, 0]), np.array([1])]
    out = kl.kl_sample_train(q, lp, m)
    assert out == {"optim/kl_sample_train_v1": 0.0, "optim/kl_sample_train_v2": 0.25, "optim/entropy": pytest.approx(7 / 6)}
    with pytest.raises(DataError, match="no action tokens"):
        kl.kl_sample_train_v1(q, lp, [np.zeros(3), np.zeros(1)])
    with pytest.raises(DataError, match="mask"):
        kl.kl_sample_train_v2(q, lp, m[:1])
    with pytest.raises(DataError, match="shape"):
        kl.entropy_over_action_tokens([np.zeros(2)], [np.ones(3)])


@given(st.lists(st.floats(-5, 5), max_size=8), st.floats(0, 1))
def test_discounted_future_sum_recurrence(x, gamma) -> None:
    y = kl.discounted_future_sum(x, gamma)
    expected = [sum(gamma ** (k - t) * x[k] for k in range(t, len(x))) for t in range(len(x))]
    np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)


def test_discounted_future_sum_bad_gamma() -> None:
    with pytest.raises(ConfigurationError, match="gamma"):
        kl.discounted_future_sum([1.0], 1.5)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.floats(0.01, 2), st.data())
def test_kl_penalty_is_centred(lengths, coef, data) -> None:
    floats = st.floats(-5, 0)
    mk = lambda n, s=floats: np.array(data.draw(st.lists(s, min_size=n, max_size=n)))  # noqa: E731
    adv = [mk(n) for n in lengths]
    q, b = [mk(n) for n in lengths], [mk(n) for n in lengths]
    m = [mk(n, st.sampled_from([0.0, 1.0])) for n in lengths]
    m[0][0] = 1.0
    new, metrics = kl.incorporate_kl_penalty(adv, q, b, m, coef)
    added = sum(float(np.sum(n_ - a)) for n_, a in zip(new, adv))
    assert abs(added) < 1e-9 * max(1.0, coef * sum(lengths) * 5)
    expected_avg = sum(float(np.sum((qq - bb) * mm)) for qq, bb, mm in zip(q, b, m)) / sum(float(mm.sum()) for mm in m)
    assert metrics["kl_policy_base"] == pytest.approx(expected_avg, rel=1e-12, abs=1e-12)
    for n_, a, mm in zip(new, adv, m):  # unmasked positions keep their advantage without discounting
        np.testing.assert_array_equal(n_[mm == 0], a[mm == 0])


def test_kl_penalty_does_not_mutate_inputs() -> None:
    adv = [np.array([0.0, 1.0])]
    kl.incorporate_kl_penalty(adv, [np.array([-1.0, -2.0])], [np.array([-2.0, -2.0])], [np.ones(2)], 1.0, 0.5)
    assert adv[0].tolist() == [0.0, 1.0]


def test_distillation_is_not_centred() -> None:
    new, metrics = kl.distillation_reverse_kl_advantages(
        [np.zeros(2)], [np.array([-1.0, -1.0])], [np.array([-2.0, -2.0])], [np.ones(2)], kl_penalty_coef=0.5
    )
    assert new[0].tolist() == [-0.5, -0.5] and metrics["teacher_kl"] == 1.0
    _, metrics = kl.distillation_reverse_kl_advantages([np.zeros(1)], [np.zeros(1)], [np.zeros(1)], [np.zeros(1)])
    assert math.isnan(metrics["teacher_kl"])
    with pytest.raises(DataError, match="teacher_logprobs"):
        kl.distillation_reverse_kl_advantages([np.zeros(1)], [np.zeros(1)], [], [np.zeros(1)])


# ------------------------------------------------------------------ behaviour the mutation run found untested


def test_estimators_return_float64_for_integer_inputs() -> None:
    for fn in (kl.k1, kl.k2, kl.k3):
        assert fn([1, 0], [0, 0]).dtype == np.float64


def test_k3_overflow_is_inf_without_a_floating_point_error() -> None:
    with np.errstate(over="raise"):  # k3 must not depend on the caller's error state
        assert kl.k3([1000.0], [0.0])[0] == math.inf


def test_diagnostics_refuse_an_empty_batch() -> None:
    with pytest.raises(DataError):
        kl.kl_sample_train([], [], [])
    with pytest.raises(DataError):
        kl.entropy_over_action_tokens([], [])


def test_entropy_of_one_action_token() -> None:
    assert kl.entropy_over_action_tokens([[-0.5, -2.0]], [[0, 1]]) == 2.0
    with pytest.raises(DataError):
        kl.entropy_over_action_tokens([[-0.5]], [[0]])


@pytest.mark.parametrize("bad", ["adv", "sampling", "base", "mask"])
def test_kl_penalty_refuses_any_per_datum_shape_mismatch(bad: str) -> None:
    arrays = {"adv": [[0.0, 0.0]], "sampling": [[-1.0, -1.0]], "base": [[-1.0, -1.0]], "mask": [[1.0, 1.0]]}
    arrays[bad] = [[-1.0, -1.0, -1.0]]
    with pytest.raises(DataError):
        kl.incorporate_kl_penalty(arrays["adv"], arrays["sampling"], arrays["base"], arrays["mask"], 0.1)


def test_distillation_pools_every_datum_and_one_token_is_enough() -> None:
    _, metrics = kl.distillation_reverse_kl_advantages([[0.0], [0.0, 0.0]], [[-1.0], [-1.0, -2.0]],
                                                       [[-2.0], [-1.5, -1.0]], [[1.0], [1.0, 1.0]])
    assert metrics["teacher_kl"] == pytest.approx((1.0 + 0.5 - 1.0) / 3, rel=1e-12)
    _, one = kl.distillation_reverse_kl_advantages([[0.0]], [[-1.0]], [[-3.0]], [[1.0]])
    assert one["teacher_kl"] == 2.0


def test_distillation_default_coefficient_is_one() -> None:
    args = ([[0.0, 0.0]], [[-1.0, -2.0]], [[-1.5, -1.0]], [[1.0, 1.0]])
    default, _ = kl.distillation_reverse_kl_advantages(*args)
    explicit, _ = kl.distillation_reverse_kl_advantages(*args, kl_penalty_coef=1.0)
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_array_equal(default[0], [-0.5, 1.0])

"""Property tests for the built-in losses: finite-difference gradients, PPO/IS/CISPO relations,
boundary conventions, and the tinker_loss dispatcher's validation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cookbook import losses
from cookbook.errors import LossInputError

H = 1e-5  # central-difference step; truncation error O(H^2), rounding O(1e-16 / H)


def fd_grad(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += H
        down[i] -= H
        g[i] = (f(up) - f(down)) / (2 * H)
    return g


def assert_fd_close(grad: np.ndarray, fd: np.ndarray) -> None:
    """Relative 1e-6, with an absolute floor for entries that are (near) zero."""
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@st.composite
def ratio_batch(draw, n_max: int = 6, spread: float = 1.0):
    n = draw(st.integers(1, n_max))
    floats = st.floats(-4.0, 0.0, allow_nan=False)
    lp = np.array(draw(st.lists(floats, min_size=n, max_size=n)))
    delta = np.array(draw(st.lists(st.floats(-spread, spread), min_size=n, max_size=n)))
    adv = np.array(draw(st.lists(st.floats(-2.0, 2.0), min_size=n, max_size=n)))
    return lp, lp - delta, adv


def away_from(r: np.ndarray, *bounds: float, margin: float = 1e-3) -> bool:
    return all(np.all(np.abs(r - b) > margin) for b in bounds)


@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-5, 0), min_size=n, max_size=n), st.lists(st.floats(-2, 2), min_size=n, max_size=n))))
def test_cross_entropy_fd(data) -> None:
    lp, w = (np.array(x) for x in data)
    out = losses.cross_entropy(lp, w)
    assert_fd_close(out.grad, fd_grad(lambda x: losses.cross_entropy(x, w).loss, lp))


def test_cross_entropy_2d_fd() -> None:
    rng = np.random.default_rng(1)
    lp, w = -rng.random((3, 4)) * 3, rng.random((3, 4))
    out = losses.cross_entropy(lp, w)
    assert out.grad.shape == (3, 4)
    assert_fd_close(out.grad, fd_grad(lambda x: losses.cross_entropy(x, w).loss, lp))


@given(ratio_batch())
def test_importance_sampling_fd(batch) -> None:
    lp, q, adv = batch
    out = losses.importance_sampling(lp, q, adv)
    assert_fd_close(out.grad, fd_grad(lambda x: losses.importance_sampling(x, q, adv).loss, lp))


@given(ratio_batch(), st.sampled_from([(0.8, 1.2), (0.5, 1.28), (0.9, 1.0)]))
def test_ppo_fd(batch, bounds) -> None:
    lp, q, adv = batch
    lo, hi = bounds
    assume(away_from(np.exp(lp - q), lo, hi))  # no kink within the FD step
    out = losses.ppo(lp, q, adv, lo, hi)
    assert_fd_close(out.grad, fd_grad(lambda x: losses.ppo(x, q, adv, lo, hi).loss, lp))


@given(ratio_batch(), st.floats(0.0, 2.0))
def test_dro_fd(batch, beta) -> None:
    lp, q, adv = batch
    out = losses.dro(lp, q, adv, beta)
    assert_fd_close(out.grad, fd_grad(lambda x: losses.dro(x, q, adv, beta).loss, lp))


@given(ratio_batch())
def test_cispo_fd_of_stop_gradient_surrogate(batch) -> None:
    """sg(clip(r)) = moving q together with lp: the ratio stays frozen while lp varies."""
    lp, q, adv = batch
    out = losses.cispo(lp, q, adv)
    assert_fd_close(out.grad, fd_grad(lambda x: losses.cispo(x, q + (x - lp), adv).loss, lp))


@given(ratio_batch())
def test_cispo_gradient_is_clipped_ratio_times_advantage(batch) -> None:
    lp, q, adv = batch
    out = losses.cispo(lp, q, adv, 0.8, 1.2)
    np.testing.assert_allclose(out.grad, -np.clip(np.exp(lp - q), 0.8, 1.2) * adv, rtol=1e-14, atol=0)


@given(ratio_batch(spread=0.15))
def test_ppo_equals_importance_sampling_inside_clip_range(batch) -> None:
    lp, q, adv = batch
    r = np.exp(lp - q)
    assume(np.all((r >= 0.8) & (r <= 1.2)))
    ppo, is_ = losses.ppo(lp, q, adv), losses.importance_sampling(lp, q, adv)
    assert ppo.loss == pytest.approx(is_.loss, rel=1e-14, abs=1e-15)
    np.testing.assert_allclose(ppo.grad, is_.grad, rtol=1e-14)


@given(ratio_batch())
def test_ppo_is_pessimistic_bound(batch) -> None:
    """min(rA, clip(r)A) <= rA, so the PPO loss is never below the IS loss."""
    lp, q, adv = batch
    assert losses.ppo(lp, q, adv).loss >= losses.importance_sampling(lp, q, adv).loss - 1e-12


def gspo_token_surrogate(x, lp0, s0, adv, lo, hi) -> float:
    """The GSPO-token objective with sg(s) frozen at s0 and sg(lp) at lp0, written independently."""
    s_t = s0 * np.exp(x - lp0)
    return float(-np.sum(np.minimum(s_t * adv, np.clip(s_t, lo, hi) * adv)))


@given(ratio_batch(spread=0.5), st.data())
def test_gspo_fd_of_token_surrogate(batch, data) -> None:
    lp, q, adv = batch
    mask = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=lp.size, max_size=lp.size)))
    assume(mask.any())  # an empty mask is refused (test_gspo_empty_mask_is_refused)
    sel = mask != 0
    s0 = float(np.exp(np.sum((lp - q)[sel]) / int(sel.sum())))
    assume(away_from(np.array([s0]), 0.8, 1.2))
    out = losses.gspo(lp, q, adv, mask)
    assert out.loss == pytest.approx(gspo_token_surrogate(lp, lp, s0, adv, 0.8, 1.2), rel=1e-13, abs=1e-13)
    assert_fd_close(out.grad, fd_grad(lambda x: gspo_token_surrogate(x, lp, s0, adv, 0.8, 1.2), lp))


def test_gspo_sequence_ratio_ignores_unmasked_tokens() -> None:
    assert losses.gspo_sequence_ratio([0.0, -1.0], [-50.0, -1.0], [0, 1]) == 1.0


def test_gspo_empty_mask_is_refused() -> None:
    """The documented mean over the marked tokens is undefined for an empty mask: refused, naming the field."""
    with pytest.raises(LossInputError, match="sequence_ratio_mask"):
        losses.gspo_sequence_ratio([0.0], [0.0], [0])
    with pytest.raises(LossInputError, match="sequence_ratio_mask"):
        losses.gspo([-1.0, -2.0], [-1.0, -2.0], [1.0, 1.0], [0.0, 0.0])
    assert losses.gspo([], [], [], []).loss == 0.0  # no tokens: the empty sum


# ---------------------------------------------------------------- boundary convention


@pytest.mark.parametrize(
    ("adv", "lo", "hi", "expected_grad"),
    [
        (2.0, 0.8, 1.0, -2.0),  # r == hi, A > 0: inactive at the boundary
        (-3.0, 1.0, 1.2, 3.0),  # r == lo, A < 0
        (1.0, 1.0, 1.0, -1.0),  # lo == hi == r
    ],
)
def test_clip_inactive_at_exact_boundary(adv, lo, hi, expected_grad) -> None:
    lp = q = np.array([-0.7])  # r == 1 exactly
    for fn in (losses.ppo, lambda *a: losses.gspo(a[0], a[1], a[2], np.ones(1), a[3], a[4])):
        out = fn(lp, q, np.array([adv]), lo, hi)
        assert out.grad.tolist() == [expected_grad]
        assert out.loss == -adv


def test_ppo_clip_active_just_past_boundary() -> None:
    q = np.zeros(1)
    beyond = np.array([1e-12])  # r = 1 + 1e-12, a hair past the bound
    assert losses.ppo(beyond, q, np.ones(1), 0.8, 1.0).grad.tolist() == [0.0]
    assert losses.ppo(-beyond, q, -np.ones(1), 1.0, 1.2).grad.tolist() == [0.0]


# ---------------------------------------------------------------- outputs


def test_loss_output_contract() -> None:
    out = losses.ppo([-1.0, -2.0], [-1.1, -1.9], [1.0, -1.0])
    assert isinstance(out.loss, float) and out.grad.dtype == np.float64 and out.grad.shape == (2,)
    assert out.metrics == {"loss:sum": out.loss}
    assert all(k.count(":") == 1 for k in out.metrics)
    with pytest.raises(AttributeError):
        out.loss = 0.0  # type: ignore[misc]


def test_float32_inputs_computed_in_float64() -> None:
    lp = np.array([-1.0, -2.0], dtype=np.float32)
    out = losses.importance_sampling(lp, lp, np.ones(2, dtype=np.float32))
    assert out.grad.dtype == np.float64 and out.loss == -2.0


# ---------------------------------------------------------------- tinker_loss


def ratio_inputs(n: int = 3, **extra):
    return {"target_tokens": np.arange(n), "logprobs": -np.ones(n), "advantages": np.ones(n), **extra}


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo", "cispo", "dro"])
def test_tinker_loss_matches_functions(loss_fn) -> None:
    lp = np.array([-0.5, -1.2, -3.0])
    inputs = ratio_inputs(advantages=np.array([1.0, -0.5, 2.0]))
    out = losses.tinker_loss(loss_fn, lp, inputs)
    direct = getattr(losses, loss_fn)(lp, inputs["logprobs"], inputs["advantages"])
    assert out.loss == direct.loss and np.array_equal(out.grad, direct.grad)


def test_tinker_loss_cross_entropy_2d() -> None:
    lp = -np.ones((2, 3))
    out = losses.tinker_loss("cross_entropy", lp, {"target_tokens": np.zeros((2, 3), int), "weights": np.ones((2, 3))})
    assert out.loss == 6.0 and out.grad.shape == (2, 3)


def test_tinker_loss_per_token_thresholds_override_config() -> None:
    lp = np.log([1.5, 1.5])
    inputs = ratio_inputs(2, logprobs=np.zeros(2), clip_high_threshold=np.array([2.0, 1.1]))
    out = losses.tinker_loss("ppo", lp, inputs, {"clip_low_threshold": 0.5, "clip_high_threshold": 1.2})
    assert out.grad[0] == pytest.approx(-1.5) and out.grad[1] == 0.0
    assert out.loss == pytest.approx(-(1.5 + 1.1))


def test_tinker_loss_gspo_and_dro_config() -> None:
    lp = np.array([-1.0, -2.0])
    out = losses.tinker_loss("gspo", lp, ratio_inputs(2, sequence_ratio_mask=np.ones(2), logprobs=lp.copy()))
    assert out.loss == -2.0
    out = losses.tinker_loss("dro", np.zeros(1), ratio_inputs(1, logprobs=-2 * np.ones(1), advantages=np.zeros(1)), {"beta": 1.0})
    assert out.loss == 2.0


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: losses.tinker_loss("ppo2", np.zeros(3), ratio_inputs()), "ppo2"),
        (lambda: losses.tinker_loss("custom", np.zeros(3), ratio_inputs()), "custom"),
        (lambda: losses.tinker_loss("stable_reinforce", np.zeros(3), ratio_inputs(), {"kl_coeff": -1.0}), "kl_coeff"),
        (lambda: losses.tinker_loss("stable_reinforce", np.zeros(3), ratio_inputs(sampled_mask=np.ones(2))), "sampled_mask"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(), {"epsilon": 0.2}), "epsilon"),
        (lambda: losses.tinker_loss("importance_sampling", np.zeros(3), ratio_inputs(), {"beta": 0.1}), "beta"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), {"target_tokens": np.arange(3), "logprobs": np.zeros(3)}), "advantages"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(mask=np.ones(3))), "mask"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(logprobs=np.zeros(2))), "logprobs"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(advantages=np.array([1, np.nan, 0]))), "advantages"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(), {"clip_low_threshold": "0.8"}), "clip_low_threshold"),  # type: ignore[dict-item]
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(), {"clip_high_threshold": float("inf")}), "clip_high_threshold"),
        (lambda: losses.tinker_loss("ppo", np.zeros((3, 2)), ratio_inputs()), "target_tokens"),
        (lambda: losses.tinker_loss("ppo", np.zeros(2), ratio_inputs()), "target_tokens"),
        (lambda: losses.tinker_loss("gspo", np.zeros(3), ratio_inputs()), "sequence_ratio_mask"),
        (lambda: losses.tinker_loss("cross_entropy", np.zeros(3), {"target_tokens": np.arange(3), "weights": np.ones(3), "advantages": np.ones(3)}), "advantages"),
        (lambda: losses.tinker_loss("ppo", np.array([0.0, np.inf, 0.0]), ratio_inputs()), "target_logprobs"),
        (lambda: losses.tinker_loss("ppo", np.zeros(3), ratio_inputs(clip_low_threshold=np.ones(2))), "clip_low_threshold"),
    ],
)
def test_tinker_loss_validation(call, needle) -> None:
    with pytest.raises(LossInputError) as info:
        call()
    assert needle in str(info.value)

"""Loss behaviour the mutation run (tools/mutation.py) found untested: through the public functions only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cookbook import losses
from cookbook.errors import LossInputError


def test_ppo_clip_active_ignores_zero_advantages() -> None:
    r = np.array([2.0, 0.5])
    active = losses.ppo_clip_active(r, np.array([0.0, 0.0]), np.full(2, 0.8), np.full(2, 1.2))
    assert not active.any()
    assert losses.ppo_clip_active(r, np.array([1.0, -1.0]), np.full(2, 0.8), np.full(2, 1.2)).all()


@pytest.mark.parametrize("name", ["importance_sampling", "ppo", "cispo"])
def test_ratio_overflow_is_silent_under_the_callers_error_state(name: str) -> None:
    with np.errstate(over="raise"):  # an overflowing ratio with A = 0 must not raise FloatingPointError
        out = getattr(losses, name)([0.0, -1.0], [-1000.0, -1.0], [0.0, 1.0])
    assert math.isfinite(out.loss)


def test_gspo_sequence_ratio_overflows_to_inf() -> None:
    assert losses.gspo_sequence_ratio([1000.0], [0.0], [1.0]) == math.inf
    assert losses.gspo_sequence_ratio([709.9], [0.0], [1.0]) == math.inf


@pytest.mark.parametrize("which", ["logprobs", "mask"])
def test_gspo_sequence_ratio_checks_shapes(which: str) -> None:
    q, m = [0.0, 0.0], [1.0, 1.0]
    if which == "logprobs":
        q = [0.0]
    else:
        m = [1.0]
    with pytest.raises(LossInputError):
        losses.gspo_sequence_ratio([0.0, 0.0], q, m)


@pytest.mark.parametrize("loss_fn", ["cispo", "gspo"])
def test_tinker_loss_passes_both_thresholds(loss_fn: str) -> None:
    """A non-default clip_high_threshold reaches the loss through the dispatcher."""
    lp = np.array([math.log(1.5)])
    inputs = {"target_tokens": np.zeros(1, dtype=np.int64), "logprobs": np.zeros(1), "advantages": np.ones(1)}
    if loss_fn == "gspo":
        inputs["sequence_ratio_mask"] = np.ones(1)
    config = {"clip_low_threshold": 0.5, "clip_high_threshold": 1.1}
    via_dispatcher = losses.tinker_loss(loss_fn, lp, inputs, config)
    direct = getattr(losses, loss_fn)(lp, inputs["logprobs"], inputs["advantages"], *(
        [inputs["sequence_ratio_mask"]] if loss_fn == "gspo" else []), 0.5, 1.1)
    assert via_dispatcher.loss == direct.loss
    np.testing.assert_array_equal(via_dispatcher.grad, direct.grad)
    # the ratio 1.5 is clipped at 1.1: cispo's weight, gspo's clipped branch
    assert via_dispatcher.loss == pytest.approx(-1.1 * (math.log(1.5) if loss_fn == "cispo" else 1.0), rel=1e-12)


@pytest.mark.parametrize("bad", ["reference_logprobs", "weights"])
def test_dpo_sequence_logratio_checks_shapes(bad: str) -> None:
    kwargs = {"reference_logprobs": [-1.0, -1.0], "weights": [1.0, 1.0], bad: [-1.0]}
    with pytest.raises(LossInputError):
        losses.dpo_sequence_logratio([-1.0, -2.0], **kwargs)


def _pair(**kw):
    base = {"chosen_logprobs": [[-1.0]], "rejected_logprobs": [[-2.0]], "chosen_ref_logprobs": [[-1.0]],
            "rejected_ref_logprobs": [[-2.0]]}
    base.update(kw)
    return base


def test_dpo_is_finite_for_huge_margins_either_way() -> None:
    for lp_c in (-2000.0, 2000.0):  # beta*h = +-200: exp(-x) would overflow in a naive log-sigmoid
        out = losses.dpo_loss(**_pair(chosen_logprobs=[[lp_c]]), beta=0.1)
        assert math.isfinite(out.loss) and np.isfinite(out.chosen_grads[0]).all()
    assert losses.dpo_loss(**_pair(chosen_logprobs=[[-2000.0]]), beta=1.0).loss == pytest.approx(1999.0, rel=1e-12)


def test_dpo_hinge_subgradient_is_zero_at_the_kink() -> None:
    out = losses.dpo_loss(**_pair(chosen_logprobs=[[0.0]]), beta=1.0, loss_type="hinge")  # z = beta*h = 1
    assert out.loss == 0.0
    assert out.chosen_grads[0][0] == 0.0 and out.rejected_grads[0][0] == 0.0


@pytest.mark.parametrize("loss_type", ["hinge", "ipo"])
def test_dpo_label_smoothing_only_for_sigmoid_and_robust(loss_type: str) -> None:
    with pytest.raises(LossInputError):
        losses.dpo_loss(**_pair(), loss_type=loss_type, label_smoothing=0.1)


def test_dpo_checks_the_rejected_shapes() -> None:
    with pytest.raises(LossInputError):
        losses.dpo_loss(**_pair(rejected_ref_logprobs=[[-2.0, -1.0]]))


def test_ipo_normalises_the_rejected_completion_by_its_length() -> None:
    # Dc = 1 (one token), Dr = -1 over two tokens: h' = 1 - (-1)/2 = 3/2 ; gap = 3/2 - 1/(2*0.1) = -7/2
    out = losses.dpo_loss([[0.0]], [[-1.0, -1.0]], [[-1.0]], [[-0.5, -0.5]], beta=0.1, loss_type="ipo")
    assert out.loss == pytest.approx(49 / 4, rel=1e-12)
    np.testing.assert_allclose(out.rejected_grads[0], [7 / 2, 7 / 2], rtol=1e-12)  # -2*gap / n_r

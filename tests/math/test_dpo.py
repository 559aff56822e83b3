"""DPO: the ln 2 invariant, chosen/rejected symmetry, finite-difference gradients, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cookbook.errors import LossInputError
from cookbook.losses import DPO_LOSS_TYPES, dpo_loss, dpo_sequence_logratio

H = 1e-5


@st.composite
def pairs(draw, max_pairs: int = 3, max_len: int = 4):
    n = draw(st.integers(1, max_pairs))
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("c", "r", "cref", "rref", "wc", "wr")}
    lp = st.floats(-3.0, 0.0)
    for _ in range(n):
        for side in ("c", "r"):
            m = draw(st.integers(1, max_len))
            out[side].append(np.array(draw(st.lists(lp, min_size=m, max_size=m))))
            out[side + "ref"].append(np.array(draw(st.lists(lp, min_size=m, max_size=m))))
            w = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=m, max_size=m)))
            w[0] = 1.0  # at least one completion token (IPO normalises by it)
            out["w" + side].append(w)
    return out


def call(p, **kw):
    return dpo_loss(p["c"], p["r"], p["cref"], p["rref"], p["wc"], p["wr"], **kw)


@given(pairs(), st.floats(0.01, 2.0))
def test_policy_equals_reference_gives_ln2(p, beta) -> None:
    out = dpo_loss(p["c"], p["r"], p["c"], p["r"], p["wc"], p["wr"], beta=beta)
    assert out.loss == pytest.approx(math.log(2), rel=1e-15)
    assert out.metrics["dpo_loss"] == out.loss
    assert out.metrics["margin"] == 0 and out.metrics["accuracy"] == 0


@given(pairs(), st.floats(0.01, 2.0))
def test_swapping_chosen_and_rejected_flips_the_margin(p, beta) -> None:
    out = call(p, beta=beta)
    swapped = dpo_loss(p["r"], p["c"], p["rref"], p["cref"], p["wr"], p["wc"], beta=beta)
    m = out.metrics
    assert swapped.metrics["margin"] == pytest.approx(-m["margin"], abs=1e-12)
    assert swapped.metrics["chosen_reward"] == pytest.approx(m["rejected_reward"], abs=1e-12)
    assert swapped.metrics["rejected_reward"] == pytest.approx(m["chosen_reward"], abs=1e-12)
    # softplus(z) - softplus(-z) = z: the loss difference is exactly the mean margin
    assert swapped.loss - out.loss == pytest.approx(m["margin"], abs=1e-12)
    for a, b in zip(out.chosen_grads, swapped.rejected_grads):
        assert np.all(np.sign(a) == -np.sign(b)) or np.allclose(a, 0)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
@given(p=pairs(), beta=st.floats(0.05, 1.0), eps=st.sampled_from([0.0, 0.1, 0.3]))
def test_gradients_match_finite_differences(loss_type, p, beta, eps) -> None:
    if loss_type in ("hinge", "ipo"):
        eps = 0.0
    out = call(p, beta=beta, loss_type=loss_type, label_smoothing=eps)
    if loss_type == "hinge":  # keep away from the kink at beta*h = 1
        h = [dpo_sequence_logratio(c, cr, wc) - dpo_sequence_logratio(r, rr, wr)
             for c, cr, wc, r, rr, wr in zip(p["c"], p["cref"], p["wc"], p["r"], p["rref"], p["wr"])]
        assume(all(abs(beta * x - 1) > 1e-3 for x in h))
    for side, grads in (("c", out.chosen_grads), ("r", out.rejected_grads)):
        for i, g in enumerate(grads):
            fd = np.zeros_like(g)
            for t in range(g.size):
                vals = []
                for sign in (1, -1):
                    q = {k: [a.copy() for a in v] for k, v in p.items()}
                    q[side][i][t] += sign * H
                    vals.append(call(q, beta=beta, loss_type=loss_type, label_smoothing=eps).loss)
                fd[t] = (vals[0] - vals[1]) / (2 * H)
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_sigmoid_matches_cookbook_formula() -> None:
    c, r = [np.array([-1.0, -2.0])], [np.array([-3.0])]
    cref, rref = [np.array([-1.5, -2.5])], [np.array([-2.0])]
    out = dpo_loss(c, r, cref, rref, beta=0.1)
    assert out.loss == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))), rel=1e-15)
    assert out.metrics["num_pairs"] == 1


def test_sequence_logratio() -> None:
    assert dpo_sequence_logratio([-1.0, -2.0], [-1.5, -2.5], [1, 0]) == 0.5
    assert dpo_sequence_logratio([-1.0, -2.0], [-1.5, -2.5]) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"loss_type": "kto"}, "loss_type"),
        ({"beta": 0.0}, "beta"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing"),
    ],
)
def test_bad_config(kwargs, needle) -> None:
    with pytest.raises(LossInputError, match=needle):
        dpo_loss([np.zeros(1)], [np.zeros(1)], [np.zeros(1)], [np.zeros(1)], **kwargs)


def test_mismatched_inputs() -> None:
    with pytest.raises(LossInputError, match="rejected_logprobs"):
        dpo_loss([np.zeros(1)], [], [np.zeros(1)], [np.zeros(1)])
    with pytest.raises(LossInputError, match=r"chosen_ref_logprobs\[0\]"):
        dpo_loss([np.zeros(2)], [np.zeros(1)], [np.zeros(1)], [np.zeros(1)])
    with pytest.raises(LossInputError, match=r"rejected_logprobs\[0\]"):
        dpo_loss([np.zeros(1)], [np.array([np.nan])], [np.zeros(1)], [np.zeros(1)])

"""Advantage estimators: properties, explicit edge cases, batch validation and filtering."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cookbook.errors import ConfigurationError, DataError
from cookbook.rl import advantages as adv

rewards = st.lists(st.floats(-10, 10), min_size=1, max_size=8)


@given(rewards)
def test_centred_sums_to_zero(r) -> None:
    a = adv.group_centred_advantages(r)
    assert abs(a.sum()) <= 1e-12 * max(1.0, np.abs(r).max()) * len(r)
    np.testing.assert_array_equal(adv.dr_grpo_advantages(r), a)


@given(st.lists(rewards, min_size=1, max_size=5))
def test_centred_sums_to_zero_per_group_in_a_batch(groups) -> None:
    for g, a in zip(groups, adv.compute_advantages(groups)):
        assert abs(a.sum()) <= 1e-12 * max(1.0, np.abs(g).max()) * len(g)


@given(rewards)
def test_rloo_is_scaled_centring(r) -> None:
    g = len(r)
    expected = np.zeros(1) if g == 1 else g / (g - 1) * adv.group_centred_advantages(r)
    np.testing.assert_allclose(adv.rloo_advantages(r), expected, rtol=1e-12, atol=1e-12)


@given(st.lists(st.floats(-10, 10), min_size=2, max_size=8))
def test_grpo_bessel_has_unit_sample_std(r) -> None:
    assume(np.ptp(r) > 1e-6)
    a = adv.grpo_advantages(r, epsilon=0.0, bessel=True)
    assert np.std(a, ddof=1) == pytest.approx(1.0, rel=1e-9)
    assert np.std(adv.grpo_advantages(r, epsilon=0.0, bessel=False)) == pytest.approx(1.0, rel=1e-9)


@given(st.floats(-10, 10), st.integers(1, 6))
def test_all_equal_rewards_give_zeros(value, g) -> None:
    r = [value] * g
    for fn in (adv.group_centred_advantages, adv.rloo_advantages, adv.dr_grpo_advantages):
        assert np.all(fn(r) == 0)
    assert np.all(adv.grpo_advantages(r, epsilon=0.0) == 0)
    assert np.all(adv.grpo_advantages(r) == 0)


def test_group_of_one() -> None:
    assert adv.group_centred_advantages([5.0]).tolist() == [0.0]
    assert adv.rloo_advantages([5.0]).tolist() == [0.0]
    assert adv.grpo_advantages([5.0]).tolist() == [0.0]
    assert adv.grpo_advantages([5.0], singleton="raw").tolist() == [5.0]
    with pytest.raises(ConfigurationError, match="singleton"):
        adv.grpo_advantages([5.0], singleton="one")  # type: ignore[arg-type]


def test_nan_and_inf_rewards_name_the_group() -> None:
    with pytest.raises(DataError, match=r"group 2, trajectory 1: reward is nan"):
        adv.compute_advantages([[1, 0], [0.5], [0, math.nan]])
    with pytest.raises(DataError, match=r"group 0, trajectory 0: reward is inf"):
        adv.compute_advantages([[math.inf, 0]], method="grpo")
    with pytest.raises(DataError, match="group 1"):
        adv.filter_constant_reward_groups([[1, 1], [-math.inf, 0]])


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="empty"):
        adv.group_centred_advantages([])
    with pytest.raises(DataError, match="shape"):
        adv.group_centred_advantages([[1.0, 2.0]])
    with pytest.raises(ConfigurationError, match="epsilon"):
        adv.grpo_advantages([1.0, 2.0], epsilon=-1.0)
    with pytest.raises(ConfigurationError, match="method"):
        adv.compute_advantages([[1.0]], method="gae")  # type: ignore[arg-type]


def test_compute_advantages_methods() -> None:
    groups = [[0.0, 1.0, 5.0], [1.0, 1.0]]
    assert [a.tolist() for a in adv.compute_advantages(groups)] == [[-2.0, -1.0, 3.0], [0.0, 0.0]]
    assert adv.compute_advantages(groups, "rloo")[0].tolist() == [-3.0, -1.5, 4.5]
    g = adv.compute_advantages(groups, "grpo", epsilon=0.0)[0]
    np.testing.assert_allclose(g, np.array([-2, -1, 3]) / math.sqrt(7), rtol=1e-15)
    g = adv.compute_advantages(groups, "grpo", epsilon=0.0, bessel=False)[0]
    np.testing.assert_allclose(g, np.array([-2, -1, 3]) / math.sqrt(14 / 3), rtol=1e-15)


def test_filter_over_the_whole_batch() -> None:
    groups: list[list[float]] = [[1, 1], [0, 1], [2, 2, 2], [3], [0.5, 0.25]]
    assert adv.filter_constant_reward_groups(groups) == [1, 4]
    assert adv.constant_reward_groups(groups).tolist() == [True, False, True, True, False]
    # tinker-cookbook #155: the filter applied to each group on its own never removes anything
    assert all(adv.filter_constant_reward_groups([g]) == [0] for g in groups)
    assert adv.filter_constant_reward_groups([[1, 1], [0, 0]]) == [0]
    assert adv.filter_constant_reward_groups([[1, 1]], keep_one_if_all_constant=False) == []
    assert adv.filter_constant_reward_groups([]) == []


# ------------------------------------------------------------------ behaviour the mutation run found untested


def test_advantages_are_float64_for_integer_rewards() -> None:
    for fn in (adv.group_centred_advantages, adv.grpo_advantages, adv.rloo_advantages):
        assert fn([1, 1]).dtype == np.float64
        assert fn([0, 2]).dtype == np.float64


def test_grpo_divides_by_std_plus_epsilon_even_when_they_sum_to_one() -> None:
    # population std of [0, 1] is 1/2; with epsilon 1/2 the divisor is exactly 1
    np.testing.assert_array_equal(adv.grpo_advantages([0, 1], epsilon=0.5, bessel=False), [-0.5, 0.5])


def test_compute_advantages_passes_grpo_options_and_defaults() -> None:
    np.testing.assert_array_equal(adv.compute_advantages([[0, 1]], "grpo")[0], adv.grpo_advantages([0, 1]))
    np.testing.assert_array_equal(adv.compute_advantages([[3]], "grpo")[0], [0.0])
    np.testing.assert_array_equal(adv.compute_advantages([[3]], "grpo", singleton="raw")[0], [3.0])
    np.testing.assert_array_equal(
        adv.compute_advantages([[0, 1, 5]], "grpo", epsilon=0.0, bessel=False)[0],
        adv.grpo_advantages([0, 1, 5], epsilon=0.0, bessel=False),
    )
    np.testing.assert_array_equal(adv.compute_advantages([[0, 1, 5]])[0], [-2.0, -1.0, 3.0])

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pytest_steer.stats.bootstrap import Interval, bootstrap_ratio, paired_difference


def _random_ratio_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    den = rng.integers(1, 4, size=n).astype(float)
    num = np.minimum(rng.integers(0, 4, size=n), den)
    return num, den


@pytest.mark.parametrize("seed", range(8))
def test_interval_contains_point_estimate(seed: int) -> None:
    num, den = _random_ratio_data(seed, n=20 + 5 * seed)
    for interval in (bootstrap_ratio(num, den, seed=seed), bootstrap_ratio(num / den, seed=seed)):
        assert interval.ci_low <= interval.mean <= interval.ci_high
        assert interval.ci_low < interval.ci_high
        assert interval.n_prompts == num.size


def test_ratio_estimator_is_sum_over_sum() -> None:
    num = [0, 1, 2, 3, 1]
    den = [1, 1, 3, 3, 2]
    assert bootstrap_ratio(num, den).mean == pytest.approx(7 / 10)
    # Not the mean of per-prompt ratios, which would be (0 + 1 + 2/3 + 1 + 1/2) / 5.
    assert bootstrap_ratio(num, den).mean != pytest.approx((0 + 1 + 2 / 3 + 1 + 0.5) / 5)
    assert bootstrap_ratio([0.2, 0.4, 0.9]).mean == pytest.approx(0.5)


def test_same_seed_gives_same_interval_and_other_seed_differs() -> None:
    num, den = _random_ratio_data(3, n=40)
    first = bootstrap_ratio(num, den, seed=7)
    assert bootstrap_ratio(num, den, seed=7) == first
    other = bootstrap_ratio(num, den, seed=8)
    assert other.mean == first.mean
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_result_independent_of_input_order_once_sorted_by_key() -> None:
    num, den = _random_ratio_data(5, n=30)
    keys = [f"{1000 + i}" for i in range(30)]
    rows = list(zip(keys, num, den))
    reference = bootstrap_ratio(num, den, seed=1)
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    assert shuffled != rows
    ordered = sorted(shuffled)
    assert bootstrap_ratio([r[1] for r in ordered], [r[2] for r in ordered], seed=1) == reference


def test_confidence_level_widens_interval() -> None:
    values = np.random.default_rng(2).random(50)
    narrow = bootstrap_ratio(values, confidence=0.5)
    wide = bootstrap_ratio(values, confidence=0.99)
    assert wide.ci_low < narrow.ci_low <= narrow.ci_high < wide.ci_high


def test_bootstrap_interval_close_to_normal_approximation() -> None:
    values = np.random.default_rng(4).random(400)
    interval = bootstrap_ratio(values, n_resamples=4000)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert interval.ci_high - interval.ci_low == pytest.approx(2 * half_width, rel=0.1)


def test_constant_values_give_zero_width_interval() -> None:
    interval = bootstrap_ratio([1.0] * 10)
    assert (interval.mean, interval.ci_low, interval.ci_high) == (1.0, 1.0, 1.0)


def test_single_prompt_is_degenerate_and_no_prompt_is_undefined() -> None:
    assert bootstrap_ratio([2.0], [4.0]) == Interval(0.5, 0.5, 0.5, 1)
    empty = bootstrap_ratio([])
    assert empty.n_prompts == 0
    assert math.isnan(empty.mean) and math.isnan(empty.ci_low) and math.isnan(empty.ci_high)
    assert not empty.is_defined


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="denominators must be positive"):
        bootstrap_ratio([1.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="shapes"):
        bootstrap_ratio([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ratio([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ratio([1.0, 0.0], confidence=1.0)
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference([1.0], None, [1.0, 0.0], None)


def test_paired_difference_of_identical_arrays_is_exactly_zero() -> None:
    num, den = _random_ratio_data(6, n=25)
    diff = paired_difference(num, den, num, den, seed=3)
    assert (diff.mean, diff.ci_low, diff.ci_high, diff.n_prompts) == (0.0, 0.0, 0.0, 25)


def test_paired_difference_point_estimate_and_pairing() -> None:
    rng = np.random.default_rng(9)
    difficulty = rng.random(60)
    a = difficulty + 0.05
    b = difficulty
    diff = paired_difference(a, None, b, None)
    assert diff.mean == pytest.approx(0.05)
    # Every prompt improves by exactly 0.05: pairing removes the prompt-to-prompt spread.
    assert diff.ci_low == pytest.approx(0.05) and diff.ci_high == pytest.approx(0.05)
    unpaired_width = bootstrap_ratio(a).ci_high - bootstrap_ratio(a).ci_low
    assert unpaired_width > 0.1


def test_paired_difference_of_ratios() -> None:
    diff = paired_difference([1, 2, 0], [2, 2, 1], [0, 1, 1], [2, 2, 1], n_resamples=500)
    assert diff.mean == pytest.approx(3 / 5 - 2 / 5)
    assert diff.ci_low <= diff.mean <= diff.ci_high


def test_interval_dict_round_trip_is_json_safe() -> None:
    interval = Interval(0.5, 0.25, 0.75, 12)
    assert interval.to_dict() == {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n_prompts": 12}
    assert Interval.from_dict(interval.to_dict()) == interval
    empty = Interval.empty().to_dict()
    assert json.loads(json.dumps(empty, allow_nan=False)) == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "n_prompts": 0,
    }
    assert not Interval.from_dict(empty).is_defined


def test_student_t_matches_known_values() -> None:
    from pytest_steer.stats.bootstrap import student_t_cdf, student_t_quantile

    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert student_t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    assert student_t_cdf(2.0, 3) == pytest.approx(0.930337, abs=1e-6)
    assert student_t_cdf(0.0, 7) == 0.5


def test_expanded_interval_is_wider_with_few_prompts_and_tends_to_the_percentile() -> None:
    from pytest_steer.stats.bootstrap import expanded_tail, unexpanded_tail

    assert expanded_tail(0.025, 5) < expanded_tail(0.025, 20) < expanded_tail(0.025, 1000) < 0.025
    assert expanded_tail(0.025, 100_000) == pytest.approx(0.025, rel=1e-3)
    assert unexpanded_tail(expanded_tail(0.01, 7), 7) == pytest.approx(0.01)
    assert (unexpanded_tail(0.0, 7), unexpanded_tail(1.0, 7)) == (0.0, 1.0)


def test_p_value_of_a_threshold_beyond_every_replicate() -> None:
    from pytest_steer.stats.bootstrap import bootstrap

    replicates = bootstrap(np.random.default_rng(0).random(30), n_resamples=500)
    assert replicates.p_value(-1.0, above=True, strict=True) == 0.0
    assert replicates.p_value(2.0, above=True, strict=True) == 1.0
    assert replicates.p_value(2.0, above=False, strict=False) == 0.0
    single = bootstrap([0.5])
    assert single.p_value(0.5, above=True, strict=False) == 0.0
    assert single.p_value(0.5, above=True, strict=True) == 1.0


def test_resamples_drawn_in_chunks_are_those_of_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_steer.stats import bootstrap as stats

    rng = np.random.default_rng(3)
    a, b, den = rng.random(37), rng.random(37), rng.integers(1, 4, 37).astype(float)
    whole = stats.paired_bootstrap(a, den, b, den, n_resamples=1001, seed=5).replicates
    idx = np.random.default_rng(5).integers(0, 37, size=(1001, 37))
    assert np.array_equal(whole, a[idx].sum(1) / den[idx].sum(1) - b[idx].sum(1) / den[idx].sum(1))
    monkeypatch.setattr(stats, "_DRAWS_PER_CHUNK", 37 * 100 + 5)  # 100 resamples a chunk, the last one short
    assert np.array_equal(stats.paired_bootstrap(a, den, b, den, n_resamples=1001, seed=5).replicates, whole)
    assert np.array_equal(stats.bootstrap(a, n_resamples=1001, seed=5).replicates, a[idx].mean(1))

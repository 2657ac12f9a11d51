from __future__ import annotations

import pytest

from pytest_steer.stats.aggregate import ConfigAggregate, compare_bootstrap
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.comparison import compare_runs, parse_compare_fail
from pytest_steer.stats.gate_language import Gate, GateSyntaxError, Selector, parse_gate
from pytest_steer.stats.gates import evaluate_gates


def make_config(
    name: str,
    alpha: float | None,
    prompt_values: dict[str, float],
    *,
    quality: dict[str, float] | None = None,
    n_errors: int = 0,
    n_cases: int | None = None,
) -> ConfigAggregate:
    """A config whose accuracy metrics all share the given per-prompt values."""
    per_prompt = {
        metric: {key: (value, 1.0) for key, value in prompt_values.items()}
        for metric in (
            "strict_prompt_accuracy",
            "strict_instruction_accuracy",
            "loose_prompt_accuracy",
            "loose_instruction_accuracy",
            "follow_rate[detectable_format:title]",
            "loose_follow_rate[detectable_format:title]",
        )
    }
    if quality is not None:
        per_prompt["quality"] = {key: (value, 1.0) for key, value in quality.items()}
    values = list(prompt_values.values())
    mean = sum(values) / len(values) if values else float("nan")
    # Fixed, easy-to-read intervals: mean +- 0.1.
    interval = Interval(mean, mean - 0.1, mean + 0.1, len(values))
    metrics = {m: interval for m in per_prompt if "[" not in m}
    return ConfigAggregate(
        name=name,
        alpha=alpha,
        n_prompts=len(prompt_values),
        n_cases=n_cases if n_cases is not None else len(prompt_values) + n_errors,
        n_errors=n_errors,
        metrics=metrics,
        per_instruction={"detectable_format:title": {"strict": interval, "loose": interval}},
        per_prompt=per_prompt,
        n_resamples=500,
    )


def values(n: int, followed: int) -> dict[str, float]:
    return {str(k): 1.0 if k < followed else 0.0 for k in range(n)}


BASELINE = make_config("baseline", None, values(40, 20), quality={str(k): 0.0 for k in range(40)})
ALPHA10 = make_config("alpha10", 10.0, values(40, 30), quality={str(k): -1.0 for k in range(40)})
ALPHA30 = make_config("alpha30", 30.0, values(40, 10))
RUN = [BASELINE, ALPHA10, ALPHA30]


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "selector", "metric", "delta", "op", "threshold"),
    [
        ("strict_prompt_accuracy >= 0.5", Selector("default"), "strict_prompt_accuracy", False, ">=", 0.5),
        ("alpha=10: strict_prompt_accuracy - baseline >= 0", Selector("alpha", 10.0), "strict_prompt_accuracy", True, ">=", 0.0),
        ("quality - baseline >= -0.5", Selector("default"), "quality", True, ">=", -0.5),
        ("quality-baseline>=-0.5", Selector("default"), "quality", True, ">=", -0.5),
        ("alpha2.5: loose_prompt_accuracy < .9", Selector("name", "alpha2.5"), "loose_prompt_accuracy", False, "<", 0.9),
        ("baseline: strict_instruction_accuracy > 6e-1", Selector("name", "baseline"), "strict_instruction_accuracy", False, ">", 0.6),
        ("all: quality <= +3", Selector("all"), "quality", False, "<=", 3.0),
        (
            "alpha = 2.5 : follow_rate[ detectable_format:title ] >= 0.8",
            Selector("alpha", 2.5),
            "follow_rate[detectable_format:title]",
            False,
            ">=",
            0.8,
        ),
        (
            "loose_follow_rate[punctuation:no_comma] - baseline > -0.1",
            Selector("default"),
            "loose_follow_rate[punctuation:no_comma]",
            True,
            ">",
            -0.1,
        ),
    ],
)
def test_parse_valid_gates(text: str, selector: Selector, metric: str, delta: bool, op: str, threshold: float) -> None:
    gate = parse_gate(text)
    assert gate == Gate(text, selector, metric, delta, op, threshold)


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("strict_prompt_accuracy = 0.5", 23, "expected a comparison operator (>=, >, <=, <)"),
        ("strict_prompt_accuracy >= high", 26, "expected a number"),
        ("strict_prompt_accuracy >=", 25, "expected a number"),
        ("strict_prompt_acuracy >= 0.5", 0, "unknown metric 'strict_prompt_acuracy'"),
        ("alpha10 strict_prompt_accuracy >= 0.5", 8, "expected ':' after the selector 'alpha10'"),
        ("alpha=ten: quality >= 0", 6, "expected a number"),
        ("alpha=10 quality >= 0", 9, "expected ':' after the selector"),
        ("quality - base >= 0", 10, "expected 'baseline' after '-'"),
        ("follow_rate >= 0.5", 12, "expected '[<instruction id>]' after 'follow_rate'"),
        ("follow_rate[detectable_format:title >= 0.5", 11, "unclosed '['"),
        ("follow_rate[ ] >= 0.5", 12, "expected an instruction id"),
        ("quality >= 0.5 0.6", 15, "unexpected text after the threshold"),
        ("quality >= 0.5 !", 15, "unexpected character '!'"),
        ("", 0, "expected a metric name"),
        ("baseline: quality - baseline >= 0", 0, "cannot select 'baseline'"),
    ],
)
def test_parse_errors_point_at_the_problem(text: str, position: int, expected: str) -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.position == position
    assert expected in error.problem
    lines = str(error).splitlines()
    assert lines[0] == f"invalid gate: {error.problem}"
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * position + "^"


# ---------------------------------------------------------------------------- evaluation


def evaluate(*gates: str, max_errors: int | float = 0, min_prompts: int = 1, run=RUN):
    return evaluate_gates(list(gates), run, max_errors=max_errors, min_prompts=min_prompts)


def bounds(agg, metric="strict_prompt_accuracy"):
    return agg.bootstrap(metric).interval(agg.confidence)


def test_absolute_gate_decided_by_lower_bound() -> None:
    # One gate alone is decided on the run's 95% interval, recomputed from the per-prompt values.
    interval = bounds(BASELINE)
    assert interval.ci_low < 0.45 < interval.mean
    assert [r.passed for r in evaluate(f"baseline: strict_prompt_accuracy >= {interval.ci_low - 0.001}")] == [True]
    (result,) = evaluate("baseline: strict_prompt_accuracy >= 0.45")
    assert not result.passed and result.shown is False
    assert result.config == "baseline"
    assert result.observed == interval
    assert result.threshold == 0.45
    assert result.message.startswith(
        f"baseline: strict_prompt_accuracy = 0.500 [{interval.ci_low:.3f}, {interval.ci_high:.3f}] (40 prompts); "
        "passes if shown: ci_low >= 0.45 at 97.50% one-sided; p = "
    )
    assert result.message.endswith(f"detectable ±{(interval.ci_high - interval.ci_low) / 2:.3f} -> not shown, FAIL")
    assert [r.passed for r in evaluate(f"baseline: strict_prompt_accuracy > {interval.ci_low}")] == [False]


def test_upper_bound_gates() -> None:
    high = bounds(ALPHA30).ci_high  # alpha30 mean 0.25
    assert [r.passed for r in evaluate("alpha30: quality <= 0.35")] == [False]  # no quality metric
    assert [r.passed for r in evaluate(f"alpha30: strict_prompt_accuracy <= {high}")] == [True]
    assert [r.passed for r in evaluate(f"alpha30: strict_prompt_accuracy < {high}")] == [False]
    assert [r.passed for r in evaluate(f"alpha30: strict_prompt_accuracy < {high + 0.001}")] == [True]
    assert [r.passed for r in evaluate("alpha30: strict_prompt_accuracy < 0.3")] == [False]


def test_default_selector_applies_to_every_config() -> None:
    results = evaluate("strict_prompt_accuracy >= 0.3")
    assert [(r.config, r.passed) for r in results] == [
        ("baseline", True),
        ("alpha10", True),
        ("alpha30", False),
    ]


def test_alpha_selector_matches_numerically() -> None:
    results = evaluate(
        "alpha=10.0: loose_instruction_accuracy >= 0.6",
        "alpha10: follow_rate[detectable_format:title] >= 0.6",
    )
    assert [(r.config, r.passed) for r in results] == [("alpha10", True), ("alpha10", True)]


def test_delta_gate_uses_paired_difference() -> None:
    results = evaluate("strict_prompt_accuracy - baseline >= 0")
    assert [r.config for r in results] == ["alpha10", "alpha30"]
    up, down = results
    # alpha10 follows the baseline's 20 prompts plus 10 more, alpha30 drops 10 of them.
    assert up.observed.mean == pytest.approx(0.25)
    assert up.observed.n_prompts == 40
    assert up.passed
    assert up.message.startswith("alpha10: strict_prompt_accuracy - baseline = +0.250 [+")
    assert "passes if shown: ci_low >= 0 at 98.75% one-sided, Holm 1 of 2" in up.message  # two checks: Holm
    assert up.message.endswith("-> shown, PASS")
    assert down.observed.mean == pytest.approx(-0.25)
    assert not down.passed


def test_delta_gate_on_quality_with_zero_width_interval() -> None:
    (result,) = evaluate("alpha10: quality - baseline >= -1")
    assert (result.observed.mean, result.observed.ci_low, result.observed.ci_high) == (-1.0, -1.0, -1.0)
    assert result.passed
    (result,) = evaluate("alpha10: quality - baseline > -1")
    assert not result.passed


def test_missing_metric_fails_with_reason() -> None:
    (result,) = evaluate("alpha30: quality - baseline >= -1")
    assert not result.passed
    assert result.observed is None
    assert result.message == ("alpha30: quality - baseline not evaluated -> FAIL (quality is not available for alpha30)")


def test_selector_with_no_match_fails() -> None:
    (result,) = evaluate("alpha=7: strict_prompt_accuracy >= 0")
    assert not result.passed
    assert result.config is None
    assert "selects no config" in result.message
    assert "baseline, alpha10, alpha30" in result.message


def test_delta_gate_without_baseline_fails() -> None:
    (result,) = evaluate("alpha10: strict_prompt_accuracy - baseline >= 0", run=[ALPHA10])
    assert not result.passed
    assert "no baseline config" in result.message


def test_error_budget_as_count_and_fraction() -> None:
    flaky = make_config("alpha10", 10.0, values(40, 40), n_errors=3, n_cases=43)
    run = [BASELINE, flaky]
    gate = "alpha10: strict_prompt_accuracy >= 0.5"
    assert [r.passed for r in evaluate(gate, run=run, max_errors=3)] == [True]
    (refused,) = evaluate(gate, run=run, max_errors=2)
    assert not refused.passed
    assert refused.observed is not None  # still reported, but it cannot pass
    assert "alpha10 has 3 errored case(s) of 43, over the budget of 2" in refused.message
    assert [r.passed for r in evaluate(gate, run=run, max_errors=0.1)] == [True]  # 4.3 allowed
    (refused,) = evaluate(gate, run=run, max_errors=0.05)  # 2.15 allowed
    assert not refused.passed
    assert "budget of 0.05 of its cases" in refused.message


def test_error_budget_of_baseline_applies_to_delta_gates() -> None:
    flaky_baseline = make_config("baseline", None, values(40, 20), n_errors=1)
    (result,) = evaluate("alpha10: strict_prompt_accuracy - baseline >= 0", run=[flaky_baseline, ALPHA10])
    assert not result.passed
    assert "baseline has 1 errored case(s)" in result.message


def test_min_prompts() -> None:
    assert [r.passed for r in evaluate("baseline: strict_prompt_accuracy >= 0.3", min_prompts=40)] == [True]
    (result,) = evaluate("baseline: strict_prompt_accuracy >= 0.3", min_prompts=41)
    assert not result.passed
    assert "only 40 prompt(s) evaluated, at least 41 required" in result.message


def test_delta_min_prompts_counts_common_prompts() -> None:
    partial = make_config("alpha10", 10.0, values(10, 10))
    (result,) = evaluate("strict_prompt_accuracy - baseline >= 0", run=[BASELINE, partial], min_prompts=20)
    assert result.observed.n_prompts == 10
    assert not result.passed


def test_gate_objects_and_strings_both_accepted_and_settings_validated() -> None:
    gate = parse_gate("baseline: quality >= -0.2")
    assert [r.passed for r in evaluate_gates([gate], RUN, max_errors=0, min_prompts=1)] == [True]
    with pytest.raises(ValueError, match="max_errors"):
        evaluate("quality >= 0", max_errors=-1)
    with pytest.raises(GateSyntaxError):
        evaluate("quality >=")


def test_result_to_dict() -> None:
    (result,) = evaluate("baseline: strict_prompt_accuracy >= 0.2")
    assert result.to_dict() == {
        "gate": "baseline: strict_prompt_accuracy >= 0.2",
        "form": "gate",
        "config": "baseline",
        "passed": True,
        "shown": True,
        "observed": bounds(BASELINE).to_dict(),
        "threshold": 0.2,
        "confidence": 0.95,
        "p_value": result.p_value,
        "detectable": result.detectable,
        "message": result.message,
    }
    assert 0 <= result.p_value < 0.025


# ---------------------------------------------------------------------------- saved runs


def test_compare_runs_flags_only_clear_regressions() -> None:
    saved = [make_config("baseline", None, values(40, 20)), make_config("alpha10", 10.0, values(40, 30))]
    current = [
        make_config("baseline", None, values(40, 19)),  # one prompt lost: noise
        make_config("alpha10", 10.0, values(40, 10)),  # twenty prompts lost: regression
    ]
    results = compare_runs(current, saved, {"strict_prompt_accuracy": 0.05})
    assert [(r.config, r.metric, r.passed) for r in results] == [
        ("baseline", "strict_prompt_accuracy", True),
        ("alpha10", "strict_prompt_accuracy", False),
    ]
    regression = results[1]
    assert regression.observed.mean == pytest.approx(-0.5)
    assert regression.observed.ci_high < -0.05
    assert regression.message.endswith("regression if ci_high < -0.05 -> FAIL")
    assert regression.to_dict()["passed"] is False
    # A tolerance wider than the drop lets it through.
    assert all(r.passed for r in compare_runs(current, saved, {"strict_prompt_accuracy": 0.9}))


def test_compare_runs_without_tolerance_prints_zero_unsigned() -> None:
    saved = [make_config("baseline", None, values(40, 20))]
    current = [make_config("baseline", None, values(40, 10))]
    (result,) = compare_runs(current, saved, {"strict_prompt_accuracy": 0.0})
    assert result.message.endswith("regression if ci_high < 0 -> FAIL")


def test_compare_runs_missing_config_metric_or_prompts_fail() -> None:
    saved = [make_config("baseline", None, values(40, 20))]
    current = [
        make_config("baseline", None, values(40, 20)),
        make_config("alpha10", 10.0, values(40, 20)),
    ]
    results = compare_runs(current, saved, {"quality": 0.5, "strict_prompt_accuracy": 0.0})
    by_key = {(r.config, r.metric): r for r in results}
    assert by_key[("baseline", "strict_prompt_accuracy")].passed
    assert by_key[("baseline", "strict_prompt_accuracy")].observed.mean == 0.0
    assert not by_key[("baseline", "quality")].passed
    assert "quality is missing from the current and saved run" in by_key[("baseline", "quality")].message
    assert not by_key[("alpha10", "strict_prompt_accuracy")].passed
    assert "the saved run has no config 'alpha10'" in by_key[("alpha10", "strict_prompt_accuracy")].message
    disjoint = [make_config("baseline", None, {"x": 1.0})]
    (result,) = compare_runs(disjoint, saved, {"strict_prompt_accuracy": 0.0})
    assert not result.passed and "no prompt in common" in result.message
    with pytest.raises(ValueError, match="unknown metric"):
        compare_runs(current, saved, {"accuracy": 0.1})


def test_parse_compare_fail() -> None:
    assert parse_compare_fail("strict_prompt_accuracy:0.05, quality:0.5") == {
        "strict_prompt_accuracy": 0.05,
        "quality": 0.5,
    }
    assert parse_compare_fail("0.02,quality:0.5,loose_prompt_accuracy:0.1") == {
        "strict_prompt_accuracy": 0.02,
        "strict_instruction_accuracy": 0.02,
        "loose_prompt_accuracy": 0.1,
        "loose_instruction_accuracy": 0.02,
        "quality": 0.5,
    }
    assert parse_compare_fail("follow_rate[detectable_format:title]:0.2") == {"follow_rate[detectable_format:title]": 0.2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty item"),
        ("quality:0.5,", "empty item"),
        ("accuracy:0.1", "unknown metric 'accuracy'"),
        ("quality:lots", "'lots' is not a number"),
        ("quality", "give it a tolerance, e.g. 'quality:0.05'"),
        ("follow_rate[detectable_format:title]", "give it a tolerance"),
        ("banana", "expected 'metric:tolerance' or a bare tolerance"),
        ("quality:-0.1", "must be a finite number >= 0"),
        ("quality:nan", "must be a finite number >= 0"),
        ("quality:0.1,quality:0.2", "quality is given twice"),
        ("0.1,0.2", "more than one bare tolerance"),
    ],
)
def test_parse_compare_fail_errors(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_compare_fail(text)
    assert expected in str(info.value)
    assert repr(text) in str(info.value)


# ---------------------------------------------------------------------------- forms and correction

UNCHANGED = make_config("alpha5", 5.0, values(40, 20))


def test_fail_if_fails_only_when_shown() -> None:
    run = [BASELINE, UNCHANGED, ALPHA10, ALPHA30]
    results = evaluate_gates([], run, fail_ifs=["strict_prompt_accuracy - baseline < 0"], max_errors=0, min_prompts=1)
    assert [(r.config, r.form, r.shown, r.passed) for r in results] == [
        ("alpha5", "fail_if", False, True),  # no change: not shown to hurt
        ("alpha10", "fail_if", False, True),
        ("alpha30", "fail_if", True, False),  # shown to hurt
    ]
    assert all(r.label == "fail if strict_prompt_accuracy - baseline < 0" for r in results)
    assert "fails if shown: ci_high < 0" in results[2].message


def test_gate_and_fail_if_share_one_rule() -> None:
    run = [BASELINE, UNCHANGED, ALPHA10, ALPHA30]
    for expression in ("strict_prompt_accuracy - baseline >= 0", "strict_prompt_accuracy - baseline < 0.1", "quality >= -0.5"):
        as_gate = evaluate_gates([expression], run, max_errors=0, min_prompts=1, correction="none")
        as_fail_if = evaluate_gates([], run, fail_ifs=[expression], max_errors=0, min_prompts=1, correction="none")
        for gate, fail_if in zip(as_gate, as_fail_if, strict=True):
            assert gate.observed == fail_if.observed
            if gate.shown is None:  # not evaluated: both refuse to pass
                assert not gate.passed and not fail_if.passed
            else:
                assert gate.shown == fail_if.shown == gate.passed == (not fail_if.passed)


def test_no_change_fails_a_ge_zero_gate_but_not_the_fail_if() -> None:
    # The old README gate demands a shown improvement; the fail-if asks for shown harm.
    run = [BASELINE, UNCHANGED]
    (gate,) = evaluate("alpha=5: strict_prompt_accuracy - baseline >= 0", run=run)
    (fail_if,) = evaluate_gates([], run, fail_ifs=["alpha=5: strict_prompt_accuracy - baseline < 0"], max_errors=0, min_prompts=1)
    # Identical values give a zero-width interval at 0: ">= 0" holds, "< 0" is not shown.
    assert gate.passed and fail_if.passed
    noisy = make_config("alpha5", 5.0, {**values(40, 20), "0": 0.0, "39": 1.0})
    (gate,) = evaluate("alpha=5: strict_prompt_accuracy - baseline >= 0", run=[BASELINE, noisy])
    (fail_if,) = evaluate_gates(
        [], [BASELINE, noisy], fail_ifs=["alpha=5: strict_prompt_accuracy - baseline < 0"], max_errors=0, min_prompts=1
    )
    assert not gate.passed and fail_if.passed


def _borderline_threshold() -> float:
    """A threshold alpha10's delta clears at a one-sided 97.5% bound but not at 98.75% (Holm, 2 checks)."""
    replicates = compare_bootstrap(ALPHA10, BASELINE, "strict_prompt_accuracy")
    low_975, low_9875 = replicates.tails(0.025)[0], replicates.tails(0.0125)[0]
    assert low_9875 < low_975
    return (low_975 + low_9875) / 2


def test_holm_makes_a_family_of_checks_one_decision() -> None:
    threshold = _borderline_threshold()
    borderline = f"alpha10: strict_prompt_accuracy - baseline >= {threshold}"
    other = "alpha30: strict_prompt_accuracy - baseline >= 0"  # clearly not shown, p = 1
    (alone,) = evaluate(borderline)
    assert alone.passed and alone.confidence == pytest.approx(0.95)
    holm = evaluate(borderline, other)
    assert [r.passed for r in holm] == [False, False]
    assert holm[0].confidence == pytest.approx(0.975)  # rank 1 of 2: tail 0.025 / 2
    assert "Holm 1 of 2" in holm[0].message
    uncorrected = evaluate_gates([borderline, other], RUN, max_errors=0, min_prompts=1, correction="none")
    assert [r.passed for r in uncorrected] == [True, False]
    assert holm[0].detectable > uncorrected[0].detectable  # a wider interval detects less


def test_holm_steps_down_and_untested_checks_are_not_in_the_family() -> None:
    sure = "alpha10: strict_prompt_accuracy - baseline >= 0"  # p = 0: shown at rank 1
    threshold = _borderline_threshold()
    borderline = f"alpha10: strict_prompt_accuracy - baseline >= {threshold}"
    untested = "alpha30: quality - baseline >= 0", "alpha30: quality >= 0"  # alpha30 has no quality
    results = evaluate(sure, borderline, *untested)
    assert [r.passed for r in results] == [True, True, False, False]
    # Rank 2 of 2 keeps the full tail: the borderline check passes as if alone.
    assert results[1].confidence == pytest.approx(0.95)
    assert [r.p_value for r in results[2:]] == [None, None]


def test_fail_ifs_join_the_gates_family() -> None:
    threshold = _borderline_threshold()
    borderline = f"alpha10: strict_prompt_accuracy - baseline >= {threshold}"
    results = evaluate_gates(
        [borderline], RUN, fail_ifs=["alpha30: quality >= 0", "baseline: strict_prompt_accuracy < 0"], max_errors=0, min_prompts=1
    )
    assert [(r.form, r.passed) for r in results] == [("gate", False), ("fail_if", False), ("fail_if", True)]
    assert "Holm" in results[0].message


def test_p_value_matches_the_bound() -> None:
    replicates = compare_bootstrap(ALPHA30, BASELINE, "strict_prompt_accuracy")
    slack = 2 / ALPHA30.n_resamples  # the bound interpolates between resamples, the p-value counts them
    for tail in (0.01, 0.025, 0.1):
        low, high = replicates.tails(tail)
        assert replicates.p_value(high + 1e-9, above=False, strict=True) <= tail + slack
        assert replicates.p_value(high - 0.03, above=False, strict=True) > tail
        assert replicates.p_value(low - 1e-9, above=True, strict=True) <= tail + slack


def test_unknown_correction_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown gate correction 'bonf'; expected one of holm, none"):
        evaluate_gates(["quality >= 0"], RUN, max_errors=0, min_prompts=1, correction="bonf")

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_steer.stats.aggregate import (
    ConfigAggregate,
    aggregate,
    compare,
    deltas_vs_baseline,
)
from pytest_steer.stats.metrics import follow_rate_name, split_follow_rate


def make_record(
    key: str,
    config: str = "baseline",
    *,
    trial: int = 0,
    ids: tuple[str, ...] = ("punctuation:no_comma",),
    strict: tuple[bool, ...] | None = None,
    loose: tuple[bool, ...] | None = None,
    quality: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A case record in its dict form, with loose verdicts defaulting to the strict ones."""
    strict = tuple(strict) if strict is not None else (True,) * len(ids)
    loose = tuple(loose) if loose is not None else strict
    if error is not None:
        strict = loose = ()
    alpha = None if config == "baseline" else float(config.removeprefix("alpha"))
    return {
        "key": key,
        "config": config,
        "alpha": alpha,
        "trial": trial,
        "seed": 1234 + trial,
        "prompt": f"prompt {key}",
        "response": "response",
        "instruction_id_list": list(ids),
        "strict": list(strict),
        "loose": list(loose),
        "follow_all_strict": bool(strict) and all(strict),
        "follow_all_loose": bool(loose) and all(loose),
        "quality": quality,
        "n_new_tokens": 10,
        "missing_spans": [],
        "cached": False,
        "error": error,
    }


A, B = "change_case:english_lowercase", "detectable_format:title"


def _known_records() -> list[dict[str, Any]]:
    return [
        # Prompt 1: one instruction, 2 trials, followed in one of them.
        make_record("1", trial=0, strict=(True,), quality=1.0),
        make_record("1", trial=1, strict=(False,), loose=(True,), quality=3.0),
        # Prompt 2: three instructions (A, B, A), one trial, 2 of 3 followed.
        make_record("2", ids=(A, B, A), strict=(True, True, False), quality=None),
        # Prompt 3: an errored trial and a valid one.
        make_record("3", trial=0, error="CUDA out of memory"),
        make_record("3", trial=1, ids=(A,), strict=(False,), quality=-2.0),
    ]


def test_trials_are_averaged_per_prompt_and_errors_excluded() -> None:
    (agg,) = aggregate(_known_records(), n_resamples=200)
    assert (agg.name, agg.alpha) == ("baseline", None)
    assert (agg.n_prompts, agg.n_cases, agg.n_errors) == (3, 5, 1)
    # Per-prompt follow-all rates 0.5, 0, 0 -> mean over prompts.
    assert agg.metrics["strict_prompt_accuracy"].mean == pytest.approx(0.5 / 3)
    # Loose: prompt 1 followed in both trials -> 1, 0, 0.
    assert agg.metrics["loose_prompt_accuracy"].mean == pytest.approx(1 / 3)
    # Micro ratio over instructions: (0.5 + 2 + 0) / (1 + 3 + 1).
    assert agg.metrics["strict_instruction_accuracy"].mean == pytest.approx(2.5 / 5)
    assert agg.metrics["loose_instruction_accuracy"].mean == pytest.approx(3 / 5)
    assert agg.per_prompt["strict_instruction_accuracy"] == {
        "1": (0.5, 1.0),
        "2": (2.0, 3.0),
        "3": (0.0, 1.0),
    }
    # Quality: prompt 1 mean 2.0, prompt 2 has none, prompt 3 -2.0.
    assert agg.metrics["quality"].mean == pytest.approx(0.0)
    assert agg.metrics["quality"].n_prompts == 2
    assert agg.metrics["strict_prompt_accuracy"].n_prompts == 3


def test_per_instruction_follow_rate_is_over_prompts_holding_the_id() -> None:
    (agg,) = aggregate(_known_records(), n_resamples=200)
    assert set(agg.per_instruction) == {"punctuation:no_comma", A, B}
    # A: prompt 2 follows 1 of its 2 A instructions (0.5), prompt 3 follows none (0).
    assert agg.per_instruction[A]["strict"].mean == pytest.approx(0.25)
    assert agg.per_instruction[A]["strict"].n_prompts == 2
    assert agg.per_instruction[B]["strict"].mean == pytest.approx(1.0)
    assert agg.per_instruction["punctuation:no_comma"]["strict"].mean == pytest.approx(0.5)
    assert agg.per_instruction["punctuation:no_comma"]["loose"].mean == pytest.approx(1.0)
    assert agg.interval(follow_rate_name(A)) == agg.per_instruction[A]["strict"]
    assert agg.interval(follow_rate_name(A, loose=True)) == agg.per_instruction[A]["loose"]
    assert agg.interval("follow_rate[unknown:id]") is None


def test_follow_rate_names_round_trip() -> None:
    assert follow_rate_name(B) == "follow_rate[detectable_format:title]"
    assert split_follow_rate(follow_rate_name(B, loose=True)) == ("loose", B)
    assert split_follow_rate("quality") is None
    assert split_follow_rate("follow_rate[]") is None


def test_quality_absent_when_never_scored() -> None:
    (agg,) = aggregate([make_record("1"), make_record("2", strict=(False,))], n_resamples=100)
    assert "quality" not in agg.metrics
    assert "quality" not in agg.per_prompt
    assert agg.interval("quality") is None


def test_configs_ordered_baseline_first_then_alpha() -> None:
    records = [make_record("1", config) for config in ("alpha20", "alpha2.5", "baseline", "alpha10")]
    names = [agg.name for agg in aggregate(records, n_resamples=50)]
    assert names == ["baseline", "alpha2.5", "alpha10", "alpha20"]


def test_config_with_only_errors_is_kept_with_undefined_metrics() -> None:
    records = [make_record("1"), make_record("1", "alpha10", error="boom")]
    baseline, steered = aggregate(records, n_resamples=50)
    assert (steered.n_prompts, steered.n_cases, steered.n_errors) == (0, 1, 1)
    assert steered.metrics == {}


def test_aggregate_independent_of_record_order() -> None:
    rng = random.Random(0)
    records = [
        make_record(str(k), config, trial=t, strict=(rng.random() < 0.5, rng.random() < 0.7), ids=(A, B), quality=rng.gauss(0, 1))
        for k in range(30)
        for config in ("baseline", "alpha10")
        for t in range(3)
    ]
    reference = [agg.to_dict(include_per_prompt=True) for agg in aggregate(records, n_resamples=300)]
    shuffled = records[:]
    rng.shuffle(shuffled)
    assert [agg.to_dict(include_per_prompt=True) for agg in aggregate(shuffled, n_resamples=300)] == reference


def test_records_as_objects_with_attributes() -> None:
    @dataclass
    class Record:
        key: str
        config: str
        alpha: float | None
        trial: int
        instruction_id_list: list[str]
        strict: list[bool]
        loose: list[bool]
        follow_all_strict: bool
        follow_all_loose: bool
        quality: float | None
        error: str | None

    records = [Record(**{k: v for k, v in make_record(str(k)).items() if k in Record.__annotations__}) for k in range(3)]
    (agg,) = aggregate(records, n_resamples=50)
    assert agg.metrics["strict_prompt_accuracy"].mean == 1.0


def test_invalid_records_are_rejected() -> None:
    duplicate = [make_record("1"), make_record("1")]
    with pytest.raises(ValueError, match="appears twice"):
        aggregate(duplicate)
    bad_verdicts = make_record("1", ids=(A, B), strict=(True,), loose=(True,))
    with pytest.raises(ValueError, match="one per instruction"):
        aggregate([bad_verdicts])
    mixed_alpha = [make_record("1", "alpha10"), {**make_record("2", "alpha10"), "alpha": 5.0}]
    with pytest.raises(ValueError, match="different alphas"):
        aggregate(mixed_alpha)
    incomplete = make_record("1")
    del incomplete["loose"]
    with pytest.raises(ValueError, match="lacks field"):
        aggregate([incomplete])


def _paired_records() -> list[dict[str, Any]]:
    """Steering at alpha 10 fixes prompts 0-9 and breaks nothing; prompt 99 only in baseline."""
    records = [make_record("99", strict=(False,))]
    for k in range(20):
        records.append(make_record(str(k), strict=(k >= 10,), quality=float(k)))
        records.append(make_record(str(k), "alpha10", strict=(True,), quality=float(k) - 1.0))
    return records


def test_compare_is_paired_over_common_prompts() -> None:
    baseline, steered = aggregate(_paired_records(), n_resamples=500)
    assert baseline.n_prompts == 21 and steered.n_prompts == 20
    delta = compare(steered, baseline, "strict_prompt_accuracy")
    assert delta.n_prompts == 20
    assert delta.mean == pytest.approx(10 / 20)
    assert 0 < delta.ci_low <= delta.mean <= delta.ci_high
    quality = compare(steered, baseline, "quality")
    assert quality.mean == pytest.approx(-1.0)
    assert quality.ci_low == pytest.approx(-1.0) and quality.ci_high == pytest.approx(-1.0)
    same = compare(steered, steered, "strict_instruction_accuracy")
    assert (same.mean, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_compare_missing_metric_raises() -> None:
    records = [make_record("1"), make_record("1", "alpha10", quality=1.0)]
    baseline, steered = aggregate(records, n_resamples=50)
    with pytest.raises(KeyError, match="quality"):
        compare(steered, baseline, "quality")


def test_deltas_vs_baseline_for_each_steered_config() -> None:
    records = _paired_records() + [make_record(str(k), "alpha30", strict=(False,)) for k in range(20)]
    aggregates = aggregate(records, n_resamples=200)
    deltas = deltas_vs_baseline(aggregates)
    assert set(deltas) == {"alpha10", "alpha30"}
    assert deltas["alpha10"]["strict_prompt_accuracy"].mean == pytest.approx(0.5)
    assert deltas["alpha30"]["strict_prompt_accuracy"].mean == pytest.approx(-0.5)
    assert "quality" in deltas["alpha10"] and "quality" not in deltas["alpha30"]
    assert deltas_vs_baseline([agg for agg in aggregates if not agg.is_baseline]) == {}


def test_to_dict_is_json_and_round_trips_with_per_prompt() -> None:
    baseline, steered = aggregate(_paired_records(), n_resamples=100)
    data = steered.to_dict()
    assert set(data) == {"name", "method", "alpha", "n_prompts", "n_cases", "n_errors", "confidence", "metrics", "per_instruction"}
    assert data["alpha"] == 10.0
    assert set(data["metrics"]["quality"]) == {"mean", "ci_low", "ci_high", "n_prompts"}
    assert set(data["per_instruction"]["punctuation:no_comma"]) == {"strict", "loose"}
    saved = json.loads(json.dumps(steered.to_dict(include_per_prompt=True), allow_nan=False))
    restored = ConfigAggregate.from_dict(saved)
    assert restored == steered
    with pytest.raises(ValueError, match="include_per_prompt=True"):
        ConfigAggregate.from_dict(data)


def test_instruction_deltas_are_paired_per_instruction_id() -> None:
    from pytest_steer.stats.aggregate import instruction_deltas_vs_baseline, instruction_quality

    def record(key, config, alpha, ids, verdicts, quality):
        return {
            "key": key,
            "config": config,
            "alpha": alpha,
            "trial": 0,
            "instruction_id_list": ids,
            "strict": verdicts,
            "loose": verdicts,
            "follow_all_strict": all(verdicts),
            "follow_all_loose": all(verdicts),
            "quality": quality,
            "error": None,
        }

    records = []
    for k in range(6):
        ids = ["a:x", "b:y"] if k < 3 else ["a:x"]
        records.append(record(str(k), "baseline", None, ids, [False] * len(ids), 0.0))
        records.append(record(str(k), "alpha10", 10.0, ids, [True] + [False] * (len(ids) - 1), -1.0 if k < 3 else 0.0))
    aggs = aggregate(records, n_resamples=200)
    deltas = instruction_deltas_vs_baseline(aggs, min_prompts=1)
    assert set(deltas) == {"alpha10"}
    assert deltas["alpha10"]["a:x"]["follow_rate"].mean == 1.0
    assert deltas["alpha10"]["b:y"]["follow_rate"].mean == 0.0
    # Quality over the prompts holding the id: b:y is only on the first three prompts.
    assert deltas["alpha10"]["b:y"]["quality"].mean == -1.0
    assert deltas["alpha10"]["b:y"]["quality"].n_prompts == 3
    assert deltas["alpha10"]["a:x"]["quality"].mean == -0.5
    assert instruction_quality(aggs[1], "b:y").mean == -1.0

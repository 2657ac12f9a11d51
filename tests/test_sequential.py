from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pytest_steer.__main__ import main
from pytest_steer.report.cases import write_cases
from pytest_steer.report.json import read_results, write_results
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import aggregate
from pytest_steer.stats.bootstrap import expanded_tail
from pytest_steer.stats.eprocess import (
    OPEN,
    SHOWN,
    SHOWN_NOT,
    Stream,
    betting_wealth,
    centered_scores,
    decide_looks,
    prompt_blocks,
    running_p_values,
)
from pytest_steer.stats.gates import evaluate_gates
from pytest_steer.stats.holm import holm
from pytest_steer.stats.sequential import (
    FINAL_TAIL_DRAWS,
    MAX_FINAL_RESAMPLES,
    SequentialSettings,
    check_streams,
    final_resamples,
    replay,
)


def test_wealth_stays_at_one_without_information():
    wealth = betting_wealth(np.zeros(50), -1.0, 1.0)
    assert np.all(wealth == 1.0)


def test_wealth_grows_under_a_real_effect_and_not_under_its_opposite():
    rng = np.random.default_rng(3)
    up = np.clip(rng.normal(0.3, 0.4, size=200), -1.0, 1.0)
    assert betting_wealth(up, -1.0, 1.0)[-1] > 1e4
    assert betting_wealth(-up, -1.0, 1.0)[-1] < 1.0


def test_wealth_never_falls_on_scores_that_cannot_be_negative():
    scores = np.random.default_rng(0).uniform(0.0, 1.0, size=100)
    wealth = betting_wealth(scores, 0.0, 1.0)
    assert np.all(np.diff(wealth) >= 0) and wealth[-1] > 1e6


def test_missing_prompts_change_nothing():
    rng = np.random.default_rng(1)
    scores = np.clip(rng.normal(0.2, 0.5, size=40), -1, 1)
    gappy = np.full(80, np.nan)
    gappy[::2] = scores
    assert betting_wealth(gappy, -1.0, 1.0)[1::2] == pytest.approx(betting_wealth(scores, -1.0, 1.0))


@pytest.mark.parametrize(
    ("draw", "low", "high"),
    [
        (lambda rng, shape: rng.uniform(-1.0, 1.0, size=shape), -1.0, 1.0),  # symmetric
        (lambda rng, shape: (rng.random(shape) < 0.1) - 0.1, -0.1, 0.9),  # right-skewed: rare large wins
        (lambda rng, shape: 0.1 - (rng.random(shape) < 0.1), -0.9, 0.1),  # left-skewed: rare large losses
    ],
)
def test_ville_bound_holds_at_every_time_under_the_null(draw, low, high):
    """Mean-zero streams: the running-supremum p-value falls below 0.05 in at most 5% of them, ever."""
    rng = np.random.default_rng(11)
    p = running_p_values(betting_wealth(draw(rng, (4000, 150)), low, high))
    ever = np.mean(p[:, -1] <= 0.05)
    assert ever <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)


def test_running_p_values_only_fall_and_stay_in_range():
    wealth = np.array([1.0, 0.5, 4.0, 2.0, 10.0, 3.0])
    p = running_p_values(wealth)
    assert p.tolist() == pytest.approx([1.0, 1.0, 0.25, 0.25, 0.1, 0.1])


def test_holm_steps_down_and_stops_at_the_first_not_cleared():
    assert holm(np.array([0.001, 0.02, 0.04]), 0.05).tolist() == [True, True, True]
    assert holm(np.array([0.01, 0.04, 0.03, 0.2]), 0.05).tolist() == [True, False, False, False]
    # 0.049 clears its own Holm level (0.05) but the step-down stopped at 0.02 > 0.05 / 3.
    assert holm(np.array([0.02, 0.04, 0.049]), 0.05).tolist() == [False, False, False]


def test_blocks_are_seeded_and_independent_of_the_input_order():
    keys = [f"p{i:02d}" for i in range(21)]
    blocks = prompt_blocks(keys, 8, seed=4)
    assert blocks == prompt_blocks(list(reversed(keys)), 8, seed=4)
    assert [len(b) for b in blocks] == [8, 8, 5]
    assert sorted(k for b in blocks for k in b) == keys
    assert blocks != prompt_blocks(keys, 8, seed=5)
    assert [k for b in blocks for k in b] != keys
    with pytest.raises(ValueError, match="at least one prompt"):
        prompt_blocks(keys, 0, seed=0)


def test_scores_of_a_ratio_have_the_sign_of_ratio_minus_threshold():
    values = {"a": (1.0, 1.0), "b": (1.0, 3.0), "c": (2.0, 2.0)}  # ratio 4 / 6
    for threshold in (0.6, 0.7):
        scores, low, high, _ = centered_scores(values, threshold, (0.0, 1.0), max_denominator=3.0)
        assert np.sign(sum(scores.values())) == np.sign(4 / 6 - threshold)
        assert all(low <= s <= high for s in scores.values())


def test_quality_is_clipped_around_the_threshold_and_counted():
    scores, low, high, clipped = centered_scores({"a": (-3.0, 1.0), "b": (0.2, 1.0)}, -0.5, None, quality_clip=1.0)
    assert (low, high, clipped) == (-1.0, 1.0, 1)
    assert scores == pytest.approx({"a": -1.0, "b": 0.7})
    with pytest.raises(ValueError, match="clipping half-width"):
        centered_scores({"a": (0.0, 1.0)}, 0.0, None, quality_clip=0.0)


def _stream(name: str, values: np.ndarray, *, above: bool) -> Stream:
    keys = tuple(f"p{i:03d}" for i in range(values.size))
    return Stream(name, keys, values, -1.0, 1.0, above)


def test_a_clear_effect_is_shown_early_and_the_run_stops():
    rng = np.random.default_rng(2)
    values = np.clip(rng.normal(-0.5, 0.3, size=200), -1, 1)
    streams = [_stream("worse", values, above=False), _stream("better", values, above=True)]
    blocks = prompt_blocks(streams[0].keys, 8, seed=0)
    looks = decide_looks(streams, blocks, 0.025, min_prompts=10)
    final = {d.name: d for d in looks[-1].decisions}
    assert final["worse"].state == SHOWN and final["better"].state == SHOWN_NOT
    assert looks[-1].prompts_used < 100 and not looks[-1].open


def test_no_effect_against_a_zero_threshold_stays_open_to_the_budget():
    values = np.random.default_rng(5).uniform(-1, 1, size=64)
    values -= values.mean()
    stream = _stream("null", values, above=False)
    looks = decide_looks([stream], prompt_blocks(stream.keys, 8, seed=1), 0.025)
    assert len(looks) == 8 and looks[-1].prompts_used == 64 and looks[-1].open == ["null"]


def test_decisions_wait_for_min_prompts_and_never_revert():
    values = np.full(80, -0.9)
    stream = _stream("worse", values, above=False)
    looks = decide_looks([stream], prompt_blocks(stream.keys, 4, seed=0), 0.025, min_prompts=20)
    states = [look.decisions[0].state for look in looks]
    assert states[:4] == [OPEN] * 4 and states[-1] == SHOWN
    assert looks[-1].decisions[0].look == 5 and looks[-1].prompts_used == 20


def test_a_config_whose_checks_are_decided_stops_and_its_values_stop_counting():
    rng = np.random.default_rng(4)
    worse = dataclasses.replace(_stream("a::worse", np.clip(rng.normal(-0.6, 0.2, size=96), -1, 1), above=False), configs=("a", "base"))
    null = rng.uniform(-1, 1, size=96)
    null = dataclasses.replace(_stream("b::null", null - null.mean(), above=False), configs=("b", "base"))
    looks = decide_looks([worse, null], prompt_blocks(worse.keys, 8, seed=0), 0.025, min_prompts=10)
    stop = next(look for look in looks if look.stopped)
    assert stop.stopped == ("a",) and stop.decisions[0].state == SHOWN and stop.decisions[1].state == OPEN
    assert looks[-1].open == ["b::null"] and looks[-1].stopped == ("a",) and len(looks) == 12  # the run goes on for b
    assert {look.decisions[0].p_shown for look in looks[stop.index - 1 :]} == {stop.decisions[0].p_shown}  # frozen


def test_a_decided_check_keeps_its_looks_prompts_and_e_values_while_its_config_runs_on():
    rng = np.random.default_rng(4)
    worse = dataclasses.replace(_stream("a::worse", np.clip(rng.normal(-0.6, 0.2, size=96), -1, 1), above=False), configs=("a",))
    null = rng.uniform(-1, 1, size=96)
    null = dataclasses.replace(_stream("a::null", null - null.mean(), above=False), configs=("a",))
    looks = decide_looks([worse, null], prompt_blocks(worse.keys, 8, seed=0), 0.025, min_prompts=10)
    decided = looks[-1].decisions[0]
    assert decided.state == SHOWN and decided.look < len(looks) and not looks[-1].stopped  # "a" ran on for a::null
    at_decision = looks[decided.look - 1].decisions[0]
    assert decided == at_decision and decided.prompts == looks[decided.look - 1].prompts_used < looks[-1].prompts_used


def test_replay_stops_a_decided_config_before_the_run():
    steered = _records(96, drop=0.7, seed=4, config="pasta_alpha20")  # the same prompts and baseline
    records = _records(96, drop=0.0, seed=4) + [r for r in steered if r["config"] != "baseline"]
    fail_if = "strict_prompt_accuracy - baseline < 0"  # open on alpha 10 (no change), shown on alpha 20
    aggregates, outcome = replay(records, [], [fail_if], SequentialSettings(seed=0), max_errors=0, min_prompts=10)
    stopped = outcome.to_dict()["prompts_by_config"]
    assert list(stopped) == ["pasta_alpha20"] and stopped["pasta_alpha20"] < len(outcome.prompts_used)
    by_name = {agg.name: agg for agg in aggregates}
    assert by_name["pasta_alpha20"].n_prompts == stopped["pasta_alpha20"]
    assert by_name["pasta_alpha10"].n_prompts == by_name["baseline"].n_prompts == len(outcome.prompts_used)
    results = {r.config: r for r in outcome.results}
    assert results["pasta_alpha20"].shown and "decided at the budget" in results["pasta_alpha10"].message


def _records(n: int, drop: float, seed: int, config: str = "pasta_alpha10") -> list[dict]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, size=n)
    out = []
    steered = (config, float(config.removeprefix("pasta_alpha")), np.clip(p - drop, 0, 1))
    for config, alpha, q in (("baseline", None, p), steered):  # noqa: B020 - the steered tuple is built first
        for i in range(n):
            for trial in range(2):
                follows = [bool(rng.random() < np.sqrt(q[i])) for _ in range(2)]
                out.append(
                    {
                        "key": f"k{i:03d}",
                        "config": config,
                        "alpha": alpha,
                        "method": None if alpha is None else "pasta",
                        "trial": trial,
                        "instruction_id_list": ["a:x", "b:y"],
                        "strict": follows,
                        "loose": follows,
                        "follow_all_strict": all(follows),
                        "follow_all_loose": all(follows),
                        "quality": None,
                        "error": None,
                        "seed": trial,
                        "prompt": f"prompt {i}",
                        "response": "",
                        "n_new_tokens": 1,
                        "missing_spans": [],
                        "cached": False,
                    }
                )
    return out


def test_replay_stops_on_a_large_drop_with_the_fixed_design_meaning():
    records = _records(120, drop=0.6, seed=0)
    aggregates, outcome = replay(
        records, [], ["strict_prompt_accuracy - baseline < 0"], SequentialSettings(seed=0), max_errors=0, min_prompts=10
    )
    (result,) = outcome.results
    assert outcome.stopped_early and not result.passed and result.shown
    assert f"shown at look {len(outcome.looks)} of 15" in result.message and "upper bound" in result.message
    assert aggregates[0].n_prompts == len(outcome.prompts_used) == outcome.to_dict()["prompts_used"] < 120
    assert outcome.to_dict()["looks"][-1]["shown"] == ["pasta_alpha10::fail if strict_prompt_accuracy - baseline < 0"]


def test_replay_decides_open_checks_at_the_budget_as_the_fixed_design_on_its_share():
    records = _records(40, drop=0.0, seed=1)
    checks = ["strict_prompt_accuracy - baseline < 0", "strict_instruction_accuracy - baseline < 0"]
    aggregates, outcome = replay(records, [], checks, SequentialSettings(seed=3), max_errors=0, min_prompts=10)
    assert not outcome.stopped_early and len(outcome.prompts_used) == 40
    resamples = final_resamples(0.02 / 2, 40)  # Holm's first step over the 2 checks, at the budget's share
    assert resamples > 2 * aggregates[0].n_resamples
    at_share = [dataclasses.replace(agg, confidence=0.96, n_resamples=resamples) for agg in aggregates]
    fixed = evaluate_gates([], at_share, fail_ifs=checks, max_errors=0, min_prompts=10)
    assert [(r.passed, r.p_value) for r in outcome.results] == [(r.passed, r.p_value) for r in fixed]
    assert all(f"decided at the budget on its share of the error, {resamples:,} resamples" in r.message for r in outcome.results)


def test_the_budget_resamples_enough_to_resolve_its_smallest_tail():
    for tail, n in ((0.02 / 12, 48), (0.02 / 60, 541), (0.02, 200)):
        resamples = final_resamples(tail, n)
        assert FINAL_TAIL_DRAWS <= resamples * expanded_tail(tail, n) < FINAL_TAIL_DRAWS + 1
    assert final_resamples(0.02 / 12, 3) == MAX_FINAL_RESAMPLES and final_resamples(0.02, 1) == 0


def test_a_check_stopped_for_futility_at_the_two_sided_error():
    stream = _stream("settled", np.full(60, 0.25), above=False)  # claims a mean below 0; every value says above
    looks = decide_looks([stream], prompt_blocks(stream.keys, 1, seed=0), 0.025)
    decision = looks[-1].decisions[0]
    assert decision.state == SHOWN_NOT and 0.025 < decision.p_shown_not <= 0.05  # before the one-sided level


def _saved_run(records: list[dict], directory: Path) -> Path:
    run = {
        "model": {"name": "tiny-test-model", "revision": "sha256:abc", "dtype": "float32", "attn_implementation": "eager"},
        "dataset": {"source": "builtin", "split": "train", "limit": None, "n_prompts": len({r["key"] for r in records})},
        "generation": {"max_new_tokens": 64, "greedy": False, "temperature": 0.7, "top_p": 1.0, "trials": 2, "seed": 0},
        "steering": {},
        "versions": {"pytest-steer": "0.1.0"},
        "git_commit": None,
        "time": "2026-01-01T00:00:00+00:00",
    }
    write_results(RunResults.from_records(run, records, seed=0), directory / "results.json")
    write_cases(records, directory / "cases.jsonl")
    return directory


def test_merge_sequential_reports_where_a_run_would_have_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _saved_run(_records(120, drop=0.6, seed=0), tmp_path / "run")
    fail_if = "strict_prompt_accuracy - baseline < 0"
    code = main(["merge", str(tmp_path / "replay"), str(source), "--fail-if", fail_if, "--sequential"])
    assert code == 1
    data = json.loads((tmp_path / "replay" / "results.json").read_text())
    used = data["sequential"]["prompts_used"]
    assert data["sequential"]["prompts_total"] == 120 and used < 120 and used % 8 == 0
    assert data["n_cases"] == used * 2 * 2 and data["configs"][0]["n_prompts"] == used
    assert data["sequential"]["looks"][-1]["open"] == [] and "shown at look" in data["gates"][0]["message"]
    assert f"{used} of 120 prompts" in capsys.readouterr().out


def test_merge_sequential_needs_a_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _saved_run(_records(16, drop=0.0, seed=0), tmp_path / "run")
    assert main(["merge", str(tmp_path / "replay"), str(source), "--sequential"]) == 2
    assert "pass at least one --gate or --fail-if" in capsys.readouterr().err


def test_results_json_keeps_the_sequential_section_and_omits_it_otherwise(tmp_path: Path) -> None:
    records = _records(16, drop=0.0, seed=0)
    plain = _saved_run(records, tmp_path / "plain") / "results.json"
    assert "sequential" not in json.loads(plain.read_text())
    section = {"prompts_used": 8, "prompts_total": 16, "looks": [{"look": 1, "prompts_used": 8, "shown": [], "shown_not": [], "open": []}]}
    results = dataclasses.replace(read_results(plain, records), sequential=section)
    write_results(results, tmp_path / "results.json")
    assert read_results(tmp_path / "results.json", records).sequential == section


def test_instruction_accuracy_is_scaled_alike_at_every_look():
    records = _records(16, drop=0.0, seed=5)
    for record in records:
        if record["key"] == "k015":  # a prompt with a third instruction, generated last
            record["instruction_id_list"] = ["a:x", "b:y", "c:z"]
            record["strict"] = record["loose"] = [*record["strict"], True]
    fail_if = ["strict_instruction_accuracy - baseline < 0"]
    whole = check_streams([], fail_if, aggregate(records, seed=0))[0]
    early = [r for r in records if r["key"] < "k008"]
    planned = check_streams([], fail_if, aggregate(early, seed=0), max_instructions=3)[0]
    assert np.array_equal(planned.scores, whole.scores[:8])  # the look after 8 prompts scores them as the whole run does
    unplanned = check_streams([], fail_if, aggregate(early, seed=0))[0]
    assert not np.array_equal(unplanned.scores, whole.scores[:8])

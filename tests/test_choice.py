"""auto: the prompts' split into a selection and an evaluation part, the fixed-sequence choice of a strength on
synthetic records, and the refusals of a run that cannot choose."""

from __future__ import annotations

import random

import pytest

from pytest_steer.plan.cases import SteeringConfig
from pytest_steer.plan.choice import ChoicePlan, PromptSplit, auto_parameter, choice_grid, given_split, split_prompts
from pytest_steer.plan.collection import run_choice, run_configs
from pytest_steer.plan.method_spec import parse_method
from pytest_steer.plan.options import SteerSettings
from pytest_steer.stats.aggregate import aggregate
from pytest_steer.stats.choice import Candidate, certifying_gate, choose_strength
from pytest_steer.stats.gate_language import parse_gate
from pytest_steer.stats.levels import CONFIDENCE, one_sided_error
from pytest_steer.steering.registry import method_registry

KEYS = [f"s{index:03d}" for index in range(1, 41)]
ERROR = one_sided_error(CONFIDENCE)
N = 24  # prompts of the synthetic selection part
GRID = [(2.0, "pasta_alpha2"), (5.0, "pasta_alpha5"), (10.0, "pasta_alpha10"), (15.0, "pasta_alpha15")]
MET = "strict_prompt_accuracy - baseline < -2"  # its complement (>= -2) is shown on any data: a delta is never below -1
HALF = [index % 2 == 0 for index in range(N)]  # half the prompts followed


# ---------------------------------------------------------------------------- the split


def test_a_split_is_disjoint_covers_the_keys_and_keeps_their_order() -> None:
    split = split_prompts(KEYS, 0.5, seed=0)
    assert not set(split.selection) & set(split.evaluation)
    assert sorted(split.selection + split.evaluation) == sorted(KEYS)
    assert len(split.selection) == 20 and len(split.evaluation) == 20
    assert list(split.selection) == [key for key in KEYS if key in split.selection]  # each part in the given order
    assert list(split.evaluation) == [key for key in KEYS if key in split.evaluation]
    assert split.selection != tuple(KEYS[:20])  # drawn, not the first half
    assert {split.part_of(key) for key in split.selection} == {"selection"}
    assert {split.part_of(key) for key in split.evaluation} == {"evaluation"}
    assert split.part_of("s999") is None


def test_a_split_depends_on_the_keys_and_the_seed_only() -> None:
    split = split_prompts(KEYS, 0.5, seed=3)
    assert split_prompts(KEYS, 0.5, seed=3) == split
    shuffled = list(KEYS)
    random.Random(1).shuffle(shuffled)
    reordered = split_prompts(shuffled, 0.5, seed=3)
    assert set(reordered.selection) == set(split.selection) and set(reordered.evaluation) == set(split.evaluation)
    assert list(reordered.selection) == [key for key in shuffled if key in split.selection]  # the order given, again
    other = split_prompts(KEYS, 0.5, seed=4)
    assert set(other.selection) != set(split.selection)
    assert len(other.selection) == 20


def test_a_prompt_added_moves_at_most_one_other_prompt() -> None:
    before = split_prompts(KEYS, 0.5, seed=0)
    after = split_prompts([*KEYS, "s041"], 0.5, seed=0)  # round(20.5) = 20 selection prompts again
    moved = set(before.selection) ^ (set(after.selection) - {"s041"})
    assert len(moved) <= 1


@pytest.mark.parametrize(("share", "selection"), [(0.25, 10), (0.5, 20), (0.7, 28), (0.9, 36)])
def test_a_split_respects_the_share(share: float, selection: int) -> None:
    split = split_prompts(KEYS, share, seed=0)
    assert len(split.selection) == selection and len(split.evaluation) == len(KEYS) - selection


def test_too_few_prompts_in_a_part_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"--steer-selection-share 0.5 of 3 prompts leaves 2 selection and 1 evaluation") as info:
        split_prompts(["a", "b", "c"], 0.5, seed=0)
    assert "each part needs at least 2" in str(info.value) and "use more prompts (--steer-limit" in str(info.value)
    with pytest.raises(ValueError, match=r"of 12 prompts leaves 6 selection and 6 evaluation prompt\(s\); each part needs at least 10"):
        split_prompts(KEYS[:12], 0.5, seed=0, min_part=10)
    with pytest.raises(ValueError, match=r"leaves 1 selection and 11 evaluation.*or another share"):
        split_prompts(KEYS[:12], 0.1, seed=0)
    assert len(split_prompts(KEYS[:4], 0.5, seed=0).evaluation) == 2  # two in each part is enough


@pytest.mark.parametrize("share", [0.0, 1.0, -0.5, 1.5])
def test_a_share_outside_zero_and_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="must be between 0 and 1"):
        split_prompts(KEYS, share, seed=0)


def test_a_given_split_refuses_shared_keys_and_small_parts() -> None:
    assert given_split(["x1", "x2"], ["a", "b", "c"]) == PromptSplit(("x1", "x2"), ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"share prompt key\(s\) b, c: selection must never see the prompts that report"):
        given_split(["a0", "b", "c"], ["b", "c", "d"])
    with pytest.raises(ValueError, match=r"the two datasets leaves 1 selection and 3 evaluation prompt\(s\)"):
        given_split(["x1"], ["a", "b", "c"])


def test_a_choice_plan_decides_the_candidates_evaluation_cases_only() -> None:
    plan = ChoicePlan("pasta", "alpha", ((2.0, "pasta_alpha2"), (10.0, "pasta_alpha10")), PromptSplit(("a", "b"), ("c", "d")))
    assert plan.decides("c", "pasta_alpha2") and plan.decides("d", "pasta_alpha10")
    assert not plan.decides("a", "pasta_alpha2")  # a selection case runs before the choice
    assert not plan.decides("c", "baseline") and not plan.decides("c", "emphasis")  # not a candidate


# ---------------------------------------------------------------------------- choosing


def records(config: str, alpha: float | None, follows: list[bool], quality: list[float] | None = None) -> list[dict]:
    """One trial per prompt, one instruction each: strict prompt accuracy is ``follows``."""
    return [
        {
            "key": f"p{index:03d}",
            "config": config,
            "alpha": alpha,
            "trial": 0,
            "instruction_id_list": ["punctuation:no_comma"],
            "strict": [followed],
            "loose": [followed],
            "follow_all_strict": followed,
            "follow_all_loose": followed,
            "quality": None if quality is None else quality[index],
            "error": None,
        }
        for index, followed in enumerate(follows)
    ]


BASE_QUALITY = [random.Random(7).gauss(-2.0, 1.0) for _ in range(N)]


def shifted(drop: float, seed: int) -> list[float]:
    """The baseline's quality moved by ``drop``, with a little per-prompt noise."""
    rng = random.Random(seed)
    return [q + drop + rng.gauss(0.0, 0.05) for q in BASE_QUALITY]


def selection_run(follows: dict[str, list[bool]] | None = None, drops: dict[str, float] | None = None) -> list:
    """Aggregates of the baseline and GRID's configs: each follows HALF and keeps the baseline's quality unless told."""
    follows, drops = follows or {}, drops or {}
    rows = records("baseline", None, HALF, BASE_QUALITY)
    for seed, (value, config) in enumerate(GRID):
        rows += records(config, value, follows.get(config, HALF), shifted(drops.get(config, 0.0), seed))
    return aggregate(rows, seed=0)


def choose(aggregates: list, constraints: list[str], grid: list[tuple[float, str]] = GRID, **kwargs):
    settings = {"following": "strict_prompt_accuracy", "max_errors": 0, "min_prompts": 2} | kwargs
    return choose_strength(aggregates, grid, [parse_gate(text) for text in constraints], **settings)


def test_certifying_gate_is_the_fail_ifs_complement_on_the_candidate() -> None:
    gate = certifying_gate(parse_gate("quality - baseline < -0.5"), "pasta_alpha10")
    assert (gate.op, gate.threshold, gate.metric, gate.delta) == (">=", -0.5, "quality", True)
    assert gate.text == "pasta_alpha10: quality - baseline >= -0.5"
    assert gate.selector.selects("pasta_alpha10", 10.0, baseline=False, delta=True)
    assert not gate.selector.selects("pasta_alpha2", 2.0, baseline=False, delta=True)
    assert certifying_gate(parse_gate("strict_prompt_accuracy >= 0.9"), "x").op == "<"


@pytest.mark.parametrize(
    "constraint",
    [
        "quality - baseline < -0.0",  # every candidate's quality drops by about 1: its lower bound is far below 0
        "quality - baseline < 0",
        "strict_prompt_accuracy < 2",  # no accuracy reaches 2
        "strict_prompt_accuracy - baseline < 1.5",  # no delta reaches 1.5
    ],
)
def test_an_impossible_constraint_chooses_none(constraint: str) -> None:
    aggregates = selection_run(drops={config: -1.0 for _, config in GRID})
    candidates, value, config, reason = choose(aggregates, [constraint])
    assert value is None and config is None
    assert reason.startswith("no strength was certified: the weakest, pasta_alpha2, did not show ")
    first, *rest = candidates
    assert [c.config for c in candidates] == [config for _, config in GRID]
    assert first.tested and not first.certified and first.p_value is not None and first.p_value > ERROR
    assert first.constraint_bound is not None and first.constraint_bound < parse_gate(constraint).threshold
    assert first.reason.startswith("did not show ")
    assert all(not c.tested and not c.certified for c in rest)
    assert all(c.reason == "not tested: the fixed sequence stopped at pasta_alpha2" for c in rest)
    assert all(c.p_value is None and c.constraint_bound is None for c in rest)


def test_a_constraint_every_strength_meets_chooses_the_best_follower() -> None:
    best = [True] * (N - 2) + [False, False]
    aggregates = selection_run(follows={"pasta_alpha10": best}, drops={config: -0.1 for _, config in GRID})
    for constraint in (MET, "quality - baseline < -0.5"):
        candidates, value, config, reason = choose(aggregates, [constraint])
        assert (value, config) == (10.0, "pasta_alpha10"), reason
        assert all(c.tested and c.certified and c.reason == "" for c in candidates)
        assert all(c.p_value is not None and c.p_value <= ERROR for c in candidates)
        threshold = parse_gate(constraint).threshold
        assert all(c.constraint_bound is not None and c.constraint_bound >= threshold for c in candidates)
        assert [c.following_estimate for c in candidates] == [0.5, 0.5, pytest.approx((N - 2) / N), 0.5]
        assert reason.startswith("4 of 4 strengths certified; pasta_alpha10 follows best among them (strict_prompt_accuracy 0.917")
        assert candidates[0].prompts_used == N


def test_a_tie_goes_to_the_weaker_strength() -> None:
    best = [True] * (N - 2) + [False, False]
    aggregates = selection_run(follows={"pasta_alpha5": best, "pasta_alpha15": best})
    _, value, config, _ = choose(aggregates, [MET])
    assert (value, config) == (5.0, "pasta_alpha5")
    _, value, _, _ = choose(aggregates, [MET], grid=GRID[::-1])  # the grid's order given does not matter
    assert value == 5.0
    _, value, _, _ = choose(selection_run(), [MET])  # every strength follows alike: the weakest
    assert value == 2.0


def test_the_fixed_sequence_stops_at_the_first_strength_not_certified() -> None:
    constraint = "quality - baseline < -0.5"
    # the weakest loses 1.5 of quality; the stronger ones lose nothing, and alpha 10 follows best
    aggregates = selection_run(follows={"pasta_alpha10": [True] * N}, drops={"pasta_alpha2": -1.5})
    candidates, value, config, reason = choose(aggregates, [constraint])
    assert value is None and config is None and reason.startswith("no strength was certified: the weakest, pasta_alpha2")
    assert [(c.tested, c.certified) for c in candidates] == [(True, False), (False, False), (False, False), (False, False)]
    # the stronger strengths' data alone certifies them: only the sequence kept them untested
    alone, value, config, _ = choose(aggregates, [constraint], grid=GRID[1:])
    assert all(c.certified for c in alone) and (value, config) == (10.0, "pasta_alpha10")


def test_a_stop_mid_grid_keeps_the_stronger_strengths_out_of_the_choice() -> None:
    constraint = "quality - baseline < -0.5"
    # alpha 2 meets the constraint, alpha 5 loses 1.5 of quality, alpha 10 would be certified and follows best
    aggregates = selection_run(follows={"pasta_alpha10": [True] * N}, drops={"pasta_alpha5": -1.5})
    candidates, value, config, reason = choose(aggregates, [constraint])
    assert [(c.tested, c.certified) for c in candidates] == [(True, True), (True, False), (False, False), (False, False)]
    assert (value, config) == (2.0, "pasta_alpha2")
    assert reason.startswith("1 of 4 strengths certified; pasta_alpha2 follows best among them")
    assert candidates[2].reason == "not tested: the fixed sequence stopped at pasta_alpha5"
    assert candidates[2].following_estimate == 1.0  # measured, never tested


def test_a_candidate_must_meet_every_constraint() -> None:
    aggregates = selection_run(drops={config: -1.0 for _, config in GRID})
    candidates, value, _, _ = choose(aggregates, [MET, "quality - baseline < -2"])
    assert all(c.certified for c in candidates) and value == 2.0
    candidates, value, _, _ = choose(aggregates, [MET, "quality - baseline < -0.5"])  # the second is violated
    assert value is None and not candidates[0].certified
    assert "quality - baseline >= -0.5" in candidates[0].reason  # the binding constraint is the violated one
    assert candidates[0].constraint_estimate == pytest.approx(-1.0, abs=0.05)


def test_too_few_selection_prompts_certify_nothing() -> None:
    candidates, value, _, _ = choose(selection_run(), [MET], min_prompts=N + 1)
    assert value is None and candidates[0].tested and not candidates[0].certified
    assert f"only {N} prompt(s) evaluated, at least {N + 1} required" in candidates[0].reason
    assert all(not c.tested for c in candidates[1:])


def test_a_candidate_without_selection_records_is_not_certified() -> None:
    aggregates = [agg for agg in selection_run() if agg.name != "pasta_alpha2"]
    candidates, value, _, _ = choose(aggregates, [MET])
    assert value is None
    assert candidates[0] == Candidate(2.0, "pasta_alpha2", None, None, None, None, False, True, 0, "has no case on the selection prompts")


# ---------------------------------------------------------------------------- refusals


def test_auto_parameter_finds_the_one_auto() -> None:
    assert auto_parameter((10.0,), [("emphasis", ())]) is None
    assert auto_parameter(("auto",), []) == ("pasta", "alpha")
    assert auto_parameter((), [("actadd", (("layer", "1"), ("coeff", "auto")))]) == ("actadd", "coeff")


def test_auto_parameter_refuses_two_autos() -> None:
    with pytest.raises(ValueError, match=r"a run chooses one strength, and pasta:alpha, actadd:coeff are all auto: keep auto on one"):
        auto_parameter(("auto",), [("actadd", (("layer", "1"), ("coeff", "auto")))])
    with pytest.raises(ValueError, match=r"actadd:layer, actadd:coeff are all auto"):
        auto_parameter((), [("actadd", (("layer", "auto"), ("coeff", "auto")))])


def test_auto_parameter_refuses_another_alpha_beside_auto() -> None:
    with pytest.raises(ValueError, match=r"--steer-alpha auto chooses among --steer-grid: give no other alpha with it"):
        auto_parameter(("auto", 10.0), [])


def pasta(*alphas: float) -> list[SteeringConfig]:
    return [SteeringConfig.of("pasta", {"alpha": alpha}, named_by=["alpha"]) for alpha in alphas]


def test_choice_grid_is_the_candidates_weakest_first() -> None:
    configs = [SteeringConfig("baseline", None), *pasta(10.0, 2.0, 5.0), SteeringConfig.of("emphasis", {})]
    assert choice_grid("pasta", "alpha", configs, [MET]) == ((2.0, "pasta_alpha2"), (5.0, "pasta_alpha5"), (10.0, "pasta_alpha10"))


def test_choice_grid_refuses_a_grid_of_one() -> None:
    with pytest.raises(ValueError, match=r"--steer-grid, which holds 1 value\(s\): give two or more"):
        choice_grid("pasta", "alpha", [SteeringConfig("baseline", None), *pasta(10.0)], [MET])


@pytest.mark.parametrize(
    "fail_ifs",
    [
        [],
        ["baseline: strict_prompt_accuracy < 0.1"],  # selects the baseline only
        ["pasta_alpha10: quality - baseline < -0.5"],  # leaves pasta_alpha2 unconstrained
        ["alpha=2: quality - baseline < -0.5"],  # leaves pasta_alpha10 unconstrained
    ],
)
def test_choice_grid_refuses_candidates_no_fail_if_constrains(fail_ifs: list[str]) -> None:
    with pytest.raises(ValueError, match=r"no --steer-fail-if constrains pasta_alpha(2|10): add one, e.g. --steer-fail-if"):
        choice_grid("pasta", "alpha", [SteeringConfig("baseline", None), *pasta(2.0, 10.0)], fail_ifs)


def test_a_run_plans_its_choice_from_the_settings() -> None:
    settings = SteerSettings(alpha=("auto",), grid=(10.0, 2.0), fail_if=(MET,), min_prompts=2)
    configs = run_configs(settings, method_registry())
    assert [config.name for config in configs] == ["baseline", "pasta_alpha2", "pasta_alpha10"]
    plan = run_choice(settings, configs, KEYS[:8])
    assert plan is not None and (plan.method, plan.parameter) == ("pasta", "alpha")
    assert plan.grid == ((2.0, "pasta_alpha2"), (10.0, "pasta_alpha10"))
    assert plan.split == split_prompts(KEYS[:8], 0.5, seed=0)
    with pytest.raises(ValueError, match="each part needs at least 10"):  # --steer-min-prompts sizes each part
        run_choice(SteerSettings(alpha=("auto",), grid=(2.0, 10.0), fail_if=(MET,)), configs, KEYS[:12])
    with pytest.raises(ValueError, match="auto is not yet chosen under --steer-sequential"):
        run_choice(SteerSettings(alpha=("auto",), grid=(2.0, 10.0), fail_if=(MET,), sequential=True, min_prompts=2), configs, KEYS[:8])
    assert run_choice(SteerSettings(alpha=(10.0,)), run_configs(SteerSettings(alpha=(10.0,)), method_registry()), KEYS) is None


def test_a_method_parameter_on_auto_sweeps_the_grid() -> None:
    settings = SteerSettings(method=(parse_method("actadd:layer=1,coeff=auto"),), grid=(4.0, 1.0), fail_if=(MET,), min_prompts=2)
    configs = run_configs(settings, method_registry())
    assert [config.name for config in configs] == ["baseline", "actadd_layer1_coeff4", "actadd_layer1_coeff1"]
    plan = run_choice(settings, configs, KEYS[:8])
    assert plan is not None and (plan.method, plan.parameter) == ("actadd", "coeff")
    assert plan.grid == ((1.0, "actadd_layer1_coeff1"), (4.0, "actadd_layer1_coeff4"))
    with pytest.raises(ValueError, match="--steer-selection-data chooses an auto value, and this run chooses none"):
        run_choice(SteerSettings(alpha=(10.0,), selection_data="builtin"), configs, KEYS)


def test_errored_selection_cases_over_the_budget_certify_nothing() -> None:
    rows = records("baseline", None, HALF, BASE_QUALITY)
    for value, config in GRID:
        rows += records(config, value, HALF, BASE_QUALITY)
    rows[N]["error"] = "generation failed"  # pasta_alpha2's first case
    aggregates = aggregate(rows, seed=0)
    candidates, value, _, _ = choose(aggregates, [MET])
    assert value is None and not candidates[0].certified
    assert "pasta_alpha2 has 1 errored case(s) of 24, over the budget of 0" in candidates[0].reason
    candidates, value, _, _ = choose(aggregates, [MET], max_errors=1)
    assert all(c.certified for c in candidates) and candidates[0].prompts_used == N - 1
    assert value == 5.0  # pasta_alpha2 lost a followed prompt to the error: it follows a little worse

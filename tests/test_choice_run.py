"""auto in a run: the selection prompts choose a strength, the evaluation prompts report it, the candidates not
chosen never generate their evaluation cases; the refusals of a run that cannot choose; the same choice under xdist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MET = "strict_prompt_accuracy - baseline < -2"  # its complement (>= -2) is shown on any data: a delta is never below -1
IMPOSSIBLE = "strict_prompt_accuracy - baseline < 1.5"  # its complement (>= 1.5) is never shown: a delta is at most 1
TEST = "def test_case(steer_case):\n    pass\n"
PROMPTS = 10


def run(pytester: pytest.Pytester, checkpoint: Path, report: Path, *extra: str, limit: int = PROMPTS) -> pytest.RunResult:
    pytester.makepyfile(test_steer=TEST)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--steer-model", str(checkpoint), "--steer-limit", str(limit),
        "--steer-max-new-tokens", "3", "--steer-quality", "none", "--steer-no-cache", "--steer-min-prompts", "2",
        "--steer-report-dir", str(report), *extra,
    )  # fmt: skip


def results(report: Path) -> dict:
    return json.loads((report / "results.json").read_text())


def cases(report: Path) -> list[dict]:
    return [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines() if line.strip()]


def keys_of(report: Path, config: str) -> set[str]:
    return {case["key"] for case in cases(report) if case["config"] == config}


def responses(report: Path) -> dict[tuple[str, str, int], str]:
    return {(c["key"], c["config"], c["trial"]): c["response"] for c in cases(report)}


def check_split(choice: dict, keys: set[str]) -> tuple[set[str], set[str]]:
    selection, evaluation = set(choice["selection_prompts"]), set(choice["evaluation_prompts"])
    assert len(selection) == len(choice["selection_prompts"]) and len(evaluation) == len(choice["evaluation_prompts"])
    assert not selection & evaluation and selection | evaluation == keys
    assert len(selection) == round(0.5 * len(keys))  # --steer-selection-share's default
    return selection, evaluation


def test_auto_chooses_a_certified_strength_and_reports_it_on_the_evaluation_prompts(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    result = run(pytester, tiny_checkpoint, report, "--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", MET)
    assert result.ret == 0, result.stdout.str()
    data = results(report)
    choice = data["choice"]
    evaluated = len(choice["evaluation_prompts"])  # the plan does not count the strength auto will not choose
    result.stdout.fnmatch_lines([f"*= {PROMPTS * 3} cases ({evaluated} of them wait for auto's choice and will not run);*"])
    assert (choice["method"], choice["parameter"], choice["constraint"]) == ("pasta", "alpha", [MET])
    assert choice["following"] == "strict_prompt_accuracy" and choice["error"] == pytest.approx(0.025)
    assert [(c["value"], c["config"]) for c in choice["candidates"]] == [(2.0, "pasta_alpha2"), (10.0, "pasta_alpha10")]
    assert all(c["certified"] and c["tested"] and c["p_value"] <= 0.025 for c in choice["candidates"])
    assert all(c["constraint_bound"] >= -2 for c in choice["candidates"])
    chosen = choice["chosen_config"]
    assert chosen in ("pasta_alpha2", "pasta_alpha10") and choice["chosen"] == float(chosen.removeprefix("pasta_alpha"))
    assert choice["reason"].startswith(f"2 of 2 strengths certified; {chosen} follows best among them")
    other = ({"pasta_alpha2", "pasta_alpha10"} - {chosen}).pop()

    everything = keys_of(report, "baseline")
    assert len(everything) == PROMPTS
    selection, evaluation = check_split(choice, everything)
    assert all(c["prompts_used"] == len(selection) for c in choice["candidates"])

    # the report and its checks read the evaluation prompts only, of the baseline and the chosen strength
    assert [(c["name"], c["n_prompts"]) for c in data["configs"]] == [("baseline", len(evaluation)), (chosen, len(evaluation))]
    [gate] = data["gates"]
    assert gate["config"] == chosen and gate["passed"] and gate["observed"]["n_prompts"] == len(evaluation)

    # the candidate not chosen ran its selection cases only; the chosen one ran every prompt
    assert keys_of(report, other) == selection
    assert keys_of(report, chosen) == everything
    assert not any(case["config"] == other and case["key"] in evaluation for case in cases(report))

    outcomes = result.parseoutcomes()
    assert outcomes["skipped"] == len(evaluation)
    assert outcomes.get("passed", 0) + outcomes.get("missed", 0) == 3 * PROMPTS - len(evaluation) + 1  # and the fail-if
    result.stdout.fnmatch_lines([f"SKIPPED [[]{len(evaluation)}[]] *: not chosen: pasta alpha=auto chose {choice['chosen']:g} ({chosen})*"])


def test_an_impossible_constraint_chooses_none_and_the_run_ends(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = run(pytester, tiny_checkpoint, report, "--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", IMPOSSIBLE)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), output
    assert "INTERNALERROR" not in output and "Traceback" not in output
    choice = results(report)["choice"]
    assert choice["chosen"] is None and choice["chosen_config"] is None
    assert choice["reason"].startswith("no strength was certified: the weakest, pasta_alpha2, did not show")
    first, second = choice["candidates"]
    assert first["tested"] and not first["certified"] and first["p_value"] > 0.025
    assert not second["tested"] and not second["certified"]
    assert second["reason"] == "not tested: the fixed sequence stopped at pasta_alpha2"

    selection, evaluation = check_split(choice, keys_of(report, "baseline"))
    assert keys_of(report, "pasta_alpha2") == selection and keys_of(report, "pasta_alpha10") == selection
    assert [c["name"] for c in results(report)["configs"]] == ["baseline"]
    assert result.parseoutcomes()["skipped"] == 2 * len(evaluation)  # every candidate's evaluation cases
    result.stdout.fnmatch_lines(
        [f"SKIPPED [[]{2 * len(evaluation)}[]] *: not chosen: pasta alpha=auto chose none (no strength was certified*"]
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            ["--steer-alpha", "auto", "--steer-grid", "2,10"],
            "*auto chooses the strongest alpha shown to meet a constraint, and no --steer-fail-if constrains pasta_alpha2*",
            id="no-fail-if",
        ),
        pytest.param(
            ["--steer-alpha", "auto", "--steer-grid", "10", "--steer-fail-if", MET],
            "*--steer-grid, which holds 1 value(s): give two or more*",
            id="grid-of-one",
        ),
        pytest.param(
            ["--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", MET, "--steer-limit", "3"],
            "*--steer-selection-share 0.5 of 3 prompts leaves 2 selection and 1 evaluation prompt(s); each part needs at least 2*",
            id="too-few-prompts",
        ),
        pytest.param(
            ["--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", MET, "--steer-sequential"],
            "*auto is not yet chosen under --steer-sequential*",
            id="sequential",
        ),
        pytest.param(
            ["--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", MET, "--steer-selection-data", "builtin"],
            "*the selection dataset and the evaluation dataset share prompt key(s) s001, s002, s003*",
            id="selection-data-shares-keys",
        ),
        pytest.param(
            ["--steer-alpha", "auto,10", "--steer-grid", "2,5", "--steer-fail-if", MET],
            "*--steer-alpha auto chooses among --steer-grid: give no other alpha with it*",
            id="auto-and-another-alpha",
        ),
        pytest.param(
            ["--steer-alpha", "auto", "--steer-method", "actadd:layer=1,coeff=auto", "--steer-grid", "2,5", "--steer-fail-if", MET],
            "*a run chooses one strength, and pasta:alpha, actadd:coeff are all auto*",
            id="two-autos",
        ),
    ],
)
def test_a_run_that_cannot_choose_is_refused_before_it_generates(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = run(pytester, tiny_checkpoint, tmp_path / "report", *extra, limit=8)
    output = [*result.stdout.lines, *result.stderr.lines]
    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR), "\n".join(output[-12:])
    assert not any("INTERNALERROR" in line for line in output), "\n".join(output[-12:])  # a clear error, no traceback
    pytest.LineMatcher(output).fnmatch_lines([message])
    assert not (tmp_path / "report" / "cases.jsonl").exists()


def test_selection_data_chooses_and_the_whole_dataset_reports(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    builtin = Path(__file__).parents[1] / "pytest_steer" / "builtin" / "ifeval_sample.jsonl"
    rows = [json.loads(line) for line in builtin.read_text().splitlines()[50:56]]
    selection_data = tmp_path / "selection.jsonl"
    selection_data.write_text("".join(json.dumps(row | {"key": "x" + row["key"]}) + "\n" for row in rows))
    report = tmp_path / "report"
    result = run(
        pytester, tiny_checkpoint, report, "--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", MET,
        "--steer-selection-data", str(selection_data), limit=6,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    data = results(report)
    choice = data["choice"]
    assert choice["selection_prompts"] == ["x" + row["key"] for row in rows]
    assert choice["evaluation_prompts"] == [f"s{index:03d}" for index in range(1, 7)]  # all of --steer-dataset
    assert all(c["certified"] and c["prompts_used"] == 6 for c in choice["candidates"])
    chosen = choice["chosen_config"]
    assert [(c["name"], c["n_prompts"]) for c in data["configs"]] == [("baseline", 6), (chosen, 6)]
    other = ({"pasta_alpha2", "pasta_alpha10"} - {chosen}).pop()
    assert keys_of(report, other) == set(choice["selection_prompts"])
    assert keys_of(report, chosen) == keys_of(report, "baseline") == set(choice["selection_prompts"] + choice["evaluation_prompts"])


def test_auto_under_xdist_chooses_as_the_serial_run(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    # float32: bfloat16's rounding differs with the matmul kernels a thread count picks (the workers' and the serial run's)
    args = ["--steer-alpha", "auto", "--steer-grid", "2,10", "--steer-fail-if", MET, "--steer-dtype", "float32"]
    serial = run(pytester, tiny_checkpoint, tmp_path / "serial", *args)
    parallel = run(pytester, tiny_checkpoint, tmp_path / "xdist", *args, "-n", "2")
    assert serial.ret == 0, serial.stdout.str()
    assert parallel.ret == 0, parallel.stdout.str()
    serial_data, parallel_data = results(tmp_path / "serial"), results(tmp_path / "xdist")
    assert serial_data["choice"]["chosen"] is not None
    assert parallel_data["choice"] == serial_data["choice"]
    assert parallel_data["configs"] == serial_data["configs"]
    assert [g["message"] for g in parallel_data["gates"]] == [g["message"] for g in serial_data["gates"]]
    assert responses(tmp_path / "xdist") == responses(tmp_path / "serial")
    assert len(responses(tmp_path / "serial")) == 3 * PROMPTS - len(serial_data["choice"]["evaluation_prompts"])
    assert parallel.parseoutcomes() == serial.parseoutcomes()
    assert len({case["worker"] for case in cases(tmp_path / "xdist")}) == 2  # both workers generated


def test_a_method_parameter_on_auto_chooses_among_the_methods_configs(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    result = run(
        pytester, tiny_checkpoint, report, "--steer-instruction-ids", "startend:end_checker",  # 8 prompts sharing an id
        "--steer-method", "actadd:layer=1,coeff=auto", "--steer-grid", "1,4", "--steer-fail-if", MET,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    data = results(report)
    choice = data["choice"]
    grid = [(1.0, "actadd_layer1_coeff1"), (4.0, "actadd_layer1_coeff4")]
    assert (choice["method"], choice["parameter"]) == ("actadd", "coeff")
    assert [(c["value"], c["config"]) for c in choice["candidates"]] == grid
    assert all(c["certified"] for c in choice["candidates"])
    chosen = choice["chosen_config"]
    assert (choice["chosen"], chosen) in grid
    everything = keys_of(report, "baseline")
    assert len(everything) == 8
    selection, evaluation = check_split(choice, everything)
    assert [(c["name"], c["method"], c["n_prompts"]) for c in data["configs"]] == [
        ("baseline", None, len(evaluation)),
        (chosen, "actadd", len(evaluation)),
    ]
    other = ({config for _, config in grid} - {chosen}).pop()
    assert keys_of(report, other) == selection and keys_of(report, chosen) == everything
    by_case = responses(report)
    assert any(by_case[(key, chosen, 0)] != by_case[(key, "baseline", 0)] for key in evaluation)  # actadd steered them
    result.stdout.fnmatch_lines([f"*not chosen: actadd coeff=auto chose {choice['chosen']:g} ({chosen}) on the selection prompts*"])

"""Several tests per case, and pytest's selection (-k, --deselect, --lf): generated, aggregated and gated honestly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_steer.plan.cases import Case, build_cases, steering_configs
from pytest_steer.plan.data import PromptRow
from pytest_steer.run.selection import ConfigSelection, RunSelection
from pytest_steer.stats.comparison import ComparisonResult
from pytest_steer.stats.gate_language import Check, CheckForm, parse_checks
from pytest_steer.stats.gates import GateResult

TWO_TESTS = """
import pytest

def test_answers(steer_case):
    assert steer_case.key != "s001", "s001 fails here"

@pytest.mark.parametrize("x", [1, 2])
def test_also(steer_case, x):
    assert steer_case.response is not None and x > 0
"""


SUITE_TEST = """
def test_follows_instructions(steer_case):
    pass
"""


def tiny_args(model: Path, *args: str) -> list[str]:
    return ["--steer-model", str(model), "--steer-max-new-tokens", "4", "--steer-min-prompts", "2", *args]


def plan_cases() -> list[Case]:
    """Prompts s001 and a-b, 2 trials, under the baseline and pasta_alpha10."""
    rows = [PromptRow(key, f"Prompt {key}.", (), ("punctuation:no_comma",), ({},)) for key in ("s001", "a-b")]
    return build_cases(rows, steering_configs([10.0]), trials=2, seed=0, highlight="prompt")


def gate(text: str, config: str | None) -> GateResult:
    form = CheckForm.FAIL_IF if text.startswith(CheckForm.FAIL_IF.label_prefix) else CheckForm.GATE
    return GateResult(Check.from_label(text, form), config, True, None, f"{config}: {text} -> PASS")


# ---------------------------------------------------------------------------- units


def test_a_full_selection_decides_every_check() -> None:
    cases = plan_cases()
    selection = RunSelection.of(cases, {case.id for case in cases})
    assert not selection.partial and selection.describe() == ""
    gates = [gate("quality > 0", "pasta_alpha10"), gate("fail if quality - baseline < 0", "pasta_alpha10")]
    kept, comparisons, decided = selection.decide(gates, [])
    assert kept == gates and decided.undecided == ()


def test_a_check_on_a_partly_selected_config_is_not_decided() -> None:
    cases = plan_cases()
    chosen = {case.id for case in cases if case.config.name == "pasta_alpha10" or case.row.key == "s001"}
    selection = RunSelection.of(cases, chosen)
    assert selection.partial
    assert selection.configs == (ConfigSelection("baseline", 2, 4, 1, 2), ConfigSelection("pasta_alpha10", 4, 4, 2, 2))
    absolute = gate("alpha=10: quality > 0", "pasta_alpha10")  # reads pasta_alpha10 alone, which is complete
    delta = gate("fail if quality - baseline < 0", "pasta_alpha10")  # reads the baseline too
    on_baseline = gate("quality > 0", "baseline")
    comparison = ComparisonResult("baseline", "quality", 0.0, True, None, "baseline: quality vs saved -> PASS")
    kept, comparisons, decided = selection.decide([absolute, delta, on_baseline], [comparison])
    assert kept == [absolute] and comparisons == []
    reasons = {check.name: check.reason for check in decided.undecided}
    assert reasons == {
        "fail if quality - baseline < 0": "not decided: pytest's selection ran 1 of 2 prompts of baseline; "
        "run without -k/-m/--deselect/--lf to decide it",
        "quality > 0": "not decided: pytest's selection ran 1 of 2 prompts of baseline; run without -k/-m/--deselect/--lf to decide it",
        "quality": "not decided: pytest's selection ran 1 of 2 prompts of baseline; run without -k/-m/--deselect/--lf to decide it",
    }
    assert [check.kind for check in decided.undecided] == ["gate", "gate", "comparison"]
    assert "ran 6 of 8 cases (1 of 2 prompts of baseline)" in decided.describe()
    assert "3 check(s) are not decided" in decided.describe()
    assert RunSelection.from_dict(json.loads(json.dumps(decided.to_dict()))) == decided


def test_a_run_stopped_early_leaves_the_checks_of_what_it_did_not_run_undecided() -> None:
    cases = plan_cases()
    stopped = "stopped after 1 failure by -x/--maxfail"
    selection = RunSelection.of(cases, {case.id for case in cases if case.config.name == "baseline"}, stopped=stopped)
    assert selection.partial
    on_baseline = gate("quality > 0", "baseline")
    kept, _, decided = selection.decide(
        [on_baseline], [], configs=steering_configs([10.0]), checks=parse_checks(["quality > 0"], ["alpha=10: quality - baseline < 0"])
    )
    assert kept == [on_baseline]  # the baseline ran to the end: its check is decided
    assert [(check.name, check.config, check.reason) for check in decided.undecided] == [
        ("quality > 0", "pasta_alpha10", f"not decided: the run ended early ({stopped}) and ran none of the 2 prompts of pasta_alpha10; "
         "run all its cases to decide it"),
        ("fail if alpha=10: quality - baseline < 0", "pasta_alpha10", f"not decided: the run ended early ({stopped}) and ran none of "
         "the 2 prompts of pasta_alpha10; run all its cases to decide it"),
    ]  # fmt: skip
    assert decided.describe().startswith(f"partial run: the run ended early ({stopped}) and ran 4 of 8 cases (none of the 2 prompts")
    assert decided.to_dict()["stopped"] == stopped
    assert RunSelection.from_dict(json.loads(json.dumps(decided.to_dict()))) == decided


def test_a_gate_whose_config_was_not_selected_at_all_is_not_decided() -> None:
    cases = plan_cases()
    selection = RunSelection.of(cases, {case.id for case in cases if case.config.name == "baseline"})
    no_target = GateResult(Check.from_label("alpha=10: quality > 0", CheckForm.GATE), None, False, None, "selects no config -> FAIL")
    kept, _, decided = selection.decide(
        [no_target], [], configs=steering_configs([10.0]), checks=parse_checks(["alpha=10: quality > 0"], [])
    )
    assert kept == []
    assert len(decided.undecided) == 1  # named once, on the config it selects
    assert decided.undecided[0].config == "pasta_alpha10"
    assert decided.undecided[0].reason.startswith("not decided: pytest's selection ran none of the 2 prompts of pasta_alpha10")


# ---------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_several_tests_share_each_case(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, workers: list[str]) -> None:
    pytester.makepyfile(test_mine=TWO_TESTS)
    out, cache = tmp_path / "results.json", tmp_path / "cache"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-rA",
        *tiny_args(tiny_checkpoint, "--steer-limit", "2", "--steer-alpha", "10"),
        "--steer-json",
        str(out),
        "--steer-cache-dir",
        str(cache),
        *workers,
    )
    output = result.stdout.str()
    assert "INTERNALERROR" not in output, output
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output  # test_answers fails on s001, by itself
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 2  # test_answers[s001-...] under both configs
    assert outcomes.get("passed", 0) + outcomes.get("missed", 0) == 2 + 8  # the rest of test_answers, every test_also
    result.stdout.fnmatch_lines(["FAILED *test_answers[[]s001-baseline-t0[]] - AssertionError*"])
    if outcomes.get("missed"):  # -rA lists the missed ones too
        assert sum(line.startswith("MISSED test_mine.py::") for line in result.stdout.lines) == outcomes["missed"]
    data = json.loads(out.read_text())
    assert data["n_cases"] == len(data["cases"]) == 4  # 2 prompts × 2 configs, each once however many tests read it
    assert sorted((c["key"], c["config"]) for c in data["cases"]) == [
        ("s001", "baseline"),
        ("s001", "pasta_alpha10"),
        ("s002", "baseline"),
        ("s002", "pasta_alpha10"),
    ]
    assert all(config["n_prompts"] == 2 and config["n_cases"] == 2 for config in data["configs"])
    assert data["selection"]["partial"] is False
    assert len(list((cache / "generation").rglob("*.json"))) == 4  # each case generated once
    result.stdout.fnmatch_lines(["baseline *2 *", "pasta_alpha10 *2 *"])  # the table's prompt counts


LOOKALIKE = """
import pytest

@pytest.mark.parametrize("name", ["s001-baseline-t0", "s002-baseline-t0"])
def test_lookalike(name):
    assert name
"""


def test_a_test_whose_id_only_looks_like_a_case_is_no_case_under_xdist(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """The xdist controller sees node ids alone; a test that requests no steer case is dropped once its report comes."""
    pytester.makepyfile(test_other=LOOKALIKE)
    args = ["-p", "no:cacheprovider", "-n", "2", *tiny_args(tiny_checkpoint, "--steer-limit", "2"), "--steer-no-cache"]
    alone = pytester.runpytest_subprocess(*args)
    assert alone.ret == pytest.ExitCode.OK, alone.stdout.str()
    assert "steering trade-off" not in alone.stdout.str()  # no steer case ran: nothing to report, nothing lost

    pytester.makepyfile(test_suite=SUITE_TEST)
    out = tmp_path / "results.json"
    both = pytester.runpytest_subprocess(*args, "--steer-json", str(out))
    output = both.stdout.str()
    assert both.ret == pytest.ExitCode.OK, output
    assert "did not report" not in output and "crashed" not in output
    data = json.loads(out.read_text())
    assert data["n_cases"] == len(data["cases"]) == 2
    assert all(case["error"] is None for case in data["cases"])
    assert all(case["nodeid"].split("::")[0].endswith("test_suite.py") for case in data["cases"])


def test_k_generates_only_the_selected_cases_and_decides_no_gate(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytester.makepyfile(test_suite=SUITE_TEST)
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess(
        "--rootdir",
        str(pytester.path),
        "-v",
        "-k",
        "s001 and baseline",
        "--steer-cache-dir",
        str(cache),
        *tiny_args(tiny_checkpoint, "--steer-limit", "3", "--steer-alpha", "10", "--steer-gate", "strict_prompt_accuracy >= 0"),
    )
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, output  # nothing failed; the gates were not decided
    result.stdout.fnmatch_lines(
        [
            "*plan: 3 prompts × 2 configs × 1 trial = 6 cases, 1 selected; 1 to generate (0 in the response cache)*",
            "[[]steer[]] baseline+pasta_alpha10: batch 1/1, 1/1 cases, *; run 1/1 cases*",
        ]
    )
    assert len(list((cache / "generation").rglob("*.json"))) == 1  # one selected case, one response
    assert output.count(": batch ") == 1
    result.stdout.fnmatch_lines(
        [
            "partial selection: pytest's selection (-k/-m/--deselect/--lf) ran 1 of 6 cases (1 of 3 prompts of baseline; "
            "none of the 3 prompts of pasta_alpha10)*",
            "gates: 0 passed, 0 failed, 2 not decided",
            "  SKIP  baseline: strict_prompt_accuracy >= 0: not decided: pytest's selection ran 1 of 3 prompts of baseline; run without*",
        ]
    )
    result.stdout.fnmatch_lines(["*steer-gates::baseline::gate[[]strict_prompt_accuracy >= 0[]] SKIPPED*"])
    percentages = [int(p) for p in re.findall(r"\[ *(\d+)%\]", output)]
    assert percentages and max(percentages) == 100 and percentages[-1] == 100  # the verdicts are counted: never past 100%
    partial_dir = pytester.path / ".pytest_cache" / "d" / "steer-report-partial"
    data = json.loads((partial_dir / "results.json").read_text())
    assert not (pytester.path / ".pytest_cache" / "d" / "steer-report" / "results.json").exists()  # the full run's place is untouched
    result.stdout.fnmatch_lines(["*the full run's report in *steer-report is left as it was*"])
    assert data["selection"]["partial"] is True
    assert data["selection"]["configs"]["baseline"] == {
        "cases_selected": 1,
        "cases_collected": 3,
        "prompts_selected": 1,
        "prompts_collected": 3,
    }
    assert data["gates"] == [] and len(data["selection"]["undecided"]) == 2
    assert [c["name"] for c in data["configs"]] == ["baseline"]


def test_last_failed_and_deselect_say_what_they_left_out(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytester.makepyfile(
        test_suite="""
        def test_follows_instructions(steer_case):
            assert steer_case.key not in ("s001", "s003")
    """
    )
    args = [
        "--rootdir",
        str(pytester.path),
        "--steer-cache-dir",
        str(tmp_path / "cache"),
        *tiny_args(tiny_checkpoint, "--steer-limit", "4", "--steer-fail-if", "strict_prompt_accuracy < -1"),
    ]
    full = pytester.runpytest_subprocess(*args)
    assert full.parseoutcomes()["failed"] == 2, full.stdout.str()
    full.stdout.fnmatch_lines(["*only the unsteered baseline ran: add steered configs with --steer-alpha*--steer-method*"])
    report = pytester.path / ".pytest_cache" / "d" / "steer-report" / "results.json"
    full_data = json.loads(report.read_text())
    assert full_data["selection"]["partial"] is False and len(full_data["gates"]) == 1 and full_data["gates"][0]["passed"]

    last_failed = pytester.runpytest_subprocess(*args, "--lf", "-rs")
    assert last_failed.ret == pytest.ExitCode.TESTS_FAILED  # the two failures, again
    data = json.loads((report.parent.parent / "steer-report-partial" / "results.json").read_text())
    assert data["selection"]["cases_selected"] == 2 and data["selection"]["partial"] is True
    assert data["gates"] == []  # never judged on the failures alone
    last_failed.stdout.fnmatch_lines(["*ran 2 of 4 cases (2 of 4 prompts of baseline)*"])
    last_failed.stdout.fnmatch_lines(["SKIPPED * not decided: pytest's selection ran 2 of 4 prompts of baseline*"])
    assert json.loads(report.read_text()) == full_data  # the full run's report is left as it was

    deselected = pytester.runpytest_subprocess(*args, "--deselect", "test_suite.py::test_follows_instructions[s002-baseline-t0]")
    deselected.stdout.fnmatch_lines(["*ran 3 of 4 cases (3 of 4 prompts of baseline)*"])
    assert deselected.parseoutcomes()["deselected"] == 1
    deselected.stdout.fnmatch_lines(
        ["*plan: 4 prompts × 1 config × 1 trial = 4 cases, 3 selected; 0 to generate (3 in the response cache)*"]
    )


FAILS_ALL = """
def test_follows_instructions(steer_case):
    assert steer_case.response is None, "every case fails"
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_run_stopped_by_maxfail_writes_a_partial_report_beside_the_full_one(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, workers: list[str]
) -> None:
    pytester.makepyfile(test_suite=FAILS_ALL)
    args = ["--rootdir", str(pytester.path), *tiny_args(tiny_checkpoint, "--steer-limit", "4", "--steer-alpha", "10")]
    args += ["--steer-fail-if", "strict_prompt_accuracy < -1", "--steer-batch-size", "2"]
    full = pytester.runpytest_subprocess(*args, "--steer-cache-dir", str(tmp_path / "full-cache"))
    assert full.parseoutcomes()["failed"] == 8, full.stdout.str()
    report = pytester.path / ".pytest_cache" / "d" / "steer-report" / "results.json"
    full_data = json.loads(report.read_text())
    assert full_data["selection"]["partial"] is False and full_data["n_cases"] == 8

    cache = tmp_path / "stopped-cache"
    stopped = pytester.runpytest_subprocess(*args, "--steer-cache-dir", str(cache), "-x", *workers)
    output = stopped.stdout.str()
    # pytest's own exit code for -x, as in a -k run: the checks it could not decide are skipped, never failed
    assert stopped.ret == (pytest.ExitCode.INTERRUPTED if workers else pytest.ExitCode.TESTS_FAILED), output
    assert json.loads(report.read_text()) == full_data  # the full run's report is left as it was
    stopped.stdout.fnmatch_lines(["*the full run's report in *steer-report is left as it was*"])
    partial = report.parent.parent / "steer-report-partial"
    data = json.loads((partial / "results.json").read_text())
    reason = data["selection"]["stopped"]  # under xdist, each worker's failure before it stopped counts
    assert data["selection"]["partial"] is True and re.fullmatch(r"stopped after (1 failure|2 failures) by -x/--maxfail", reason)
    cases = [json.loads(line) for line in (partial / "cases.jsonl").read_text().splitlines()]
    assert data["n_lost"] == 0 and len(cases) == data["n_cases"] and all(case["error"] is None for case in cases)  # not run is not lost
    generated = len(list((cache / "generation").rglob("*.json")))
    assert data["n_cases"] == data["selection"]["cases_selected"] == generated < 8  # every response generated is in the report
    undecided = data["selection"]["undecided"]
    assert undecided and all(check["reason"].startswith(f"not decided: the run ended early ({reason}) and ran") for check in undecided)
    assert not any(gate["config"] in {check["config"] for check in undecided} for gate in data["gates"])
    assert "did not report" not in output and "lost" not in output


def test_a_config_without_any_selected_case_leaves_its_checks_undecided() -> None:
    cases = plan_cases()
    selection = RunSelection.of(cases, {case.id for case in cases if case.config.name == "baseline"})
    configs = steering_configs([10.0])
    _, _, decided = selection.decide(
        [], [], configs=configs, checks=parse_checks(["quality > 0"], ["alpha=10: quality - baseline < 0"]), compared=["quality"]
    )
    assert [(check.kind, check.name, check.config) for check in decided.undecided] == [
        ("gate", "quality > 0", "pasta_alpha10"),
        ("gate", "fail if alpha=10: quality - baseline < 0", "pasta_alpha10"),
        ("comparison", "quality", "pasta_alpha10"),
    ]  # the baseline is complete: checks on it are decided, and none was given here


def test_a_partial_selection_saves_no_baseline(tmp_path: Path) -> None:
    import dataclasses

    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.report.outputs import write_outputs
    from pytest_steer.run.results import RunResults

    cases = plan_cases()
    selection = RunSelection.of(cases, {case.id for case in cases if case.row.key == "s001"})
    results = dataclasses.replace(RunResults.from_records({}, [], seed=0), selection=selection)
    saved = tmp_path / "baseline.json"
    written = write_outputs(results, SteerSettings(save=saved), tmp_path / "report")
    assert not saved.exists()
    assert written.failures == [
        f"--steer-save {saved}: not written (pytest's selection ran only part of the cases; "
        "save a baseline from a run without -k/-m/--deselect/--lf)"
    ]

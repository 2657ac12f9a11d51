"""Gates, saved baselines, xdist and crashed workers, end to end on a tiny model."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "ifeval")


def run_suite(pytester: pytest.Pytester, model: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        SUITE,
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(REPO),
        "--steer-model",
        str(model),
        "--steer-limit",
        "6",
        "--steer-alpha",
        "10",
        "--steer-max-new-tokens",
        "4",
        "--steer-min-prompts",
        "2",
        "--steer-no-cache",
        *args,
    )


def test_passing_gate_exits_zero_and_failing_gate_exits_one(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    passing = run_suite(pytester, tiny_checkpoint, "--steer-gate", "strict_prompt_accuracy >= 0")
    assert passing.ret == pytest.ExitCode.OK, passing.stdout.str()
    passing.stdout.fnmatch_lines(["gates: 2 passed, 0 failed"])  # one gate, two configs

    failing = run_suite(pytester, tiny_checkpoint, "--steer-gate", "alpha=10: strict_prompt_accuracy - baseline >= 0.5")
    assert failing.ret == pytest.ExitCode.TESTS_FAILED
    failing.stdout.fnmatch_lines(["FAILED *steer-gates::pasta_alpha10::gate[[]alpha=10: strict_prompt_accuracy - baseline >= 0.5[]]*"])
    assert failing.parseoutcomes()["failed"] == 1


def test_invalid_gate_stops_at_start_with_the_position(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    result = run_suite(pytester, tiny_checkpoint, "--steer-gate", "strict_prompt_accuracy >== 0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-gate*", "*^*"])


def test_gates_on_too_few_prompts_are_refused_before_generation(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    result = run_suite(pytester, tiny_checkpoint, "--steer-gate", "strict_prompt_accuracy >= 0", "--steer-min-prompts", "50")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # an error during collection: nothing ran
    result.stdout.fnmatch_lines(
        ["*pytest-steer: --steer-min-prompts 50: *at least 50 evaluated prompts, and this run selects 6; raise --steer-limit*"]
    )
    assert "[steer] loaded" not in result.stdout.str()


def test_baseline_regression_fails_and_mismatch_is_refused(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    saved = tmp_path / "baseline.json"
    twelve = ("--steer-limit", "12")  # enough prompts for the small-sample interval to show the regression
    assert run_suite(pytester, tiny_checkpoint, *twelve, "--steer-save", str(saved)).ret == pytest.ExitCode.OK
    data = json.loads(saved.read_text())
    # Pretend the saved run followed every instruction: the current run is then a sure regression.
    for config in data["configs"]:
        for metric, values in config["per_prompt"].items():
            if metric.endswith("accuracy"):
                config["per_prompt"][metric] = {key: [den, den] for key, (num, den) in values.items()}
    saved.write_text(json.dumps(data))
    result = run_suite(
        pytester, tiny_checkpoint, *twelve, "--steer-baseline", str(saved), "--steer-compare-fail", "strict_prompt_accuracy:0.1"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED *steer-baseline::baseline::strict_prompt_accuracy*"])

    other = run_suite(pytester, tiny_checkpoint, *twelve, "--steer-baseline", str(saved), "--steer-max-new-tokens", "5")
    assert other.ret == pytest.ExitCode.INTERRUPTED  # refused at collection, before anything is generated
    other.stdout.fnmatch_lines(
        ["*--steer-baseline * was saved with other settings than this run's: --steer-max-new-tokens 4 (this run: 5)*"]
    )


def test_junit_has_case_and_gate_testcases(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    run_suite(pytester, tiny_checkpoint, "--steer-gate", "strict_prompt_accuracy >= 0.9", f"--junitxml={junit}")
    cases = ET.parse(junit).getroot().iter("testcase")
    by_name = {case.get("name"): case for case in cases}
    case = by_name["test_follows_instructions[s001-pasta_alpha10-t0]"]
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["steer.config"] == "pasta_alpha10"
    assert properties["steer.follow_all_strict"] in ("true", "false")
    assert "steer.response" in properties
    gate = by_name["gate[strict_prompt_accuracy >= 0.9]"]
    assert gate.find("failure") is not None
    gate_properties = {p.get("name"): p.get("value") for p in gate.iter("property")}
    assert gate_properties["steer.passed"] == "false"


def test_xdist_gives_the_same_results_as_a_serial_run(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "serial.json", tmp_path / "parallel.json"
    # float32: bfloat16's rounding differs with the matmul kernels a thread count picks (the workers' and the serial run's)
    gate = ["--steer-gate", "strict_prompt_accuracy >= 0", "--steer-trials", "2", "--steer-dtype", "float32"]
    assert run_suite(pytester, tiny_checkpoint, *gate, "--steer-json", str(serial)).ret == 0
    result = run_suite(pytester, tiny_checkpoint, *gate, "--steer-json", str(parallel), "-n", "2")
    assert result.ret == 0, result.stdout.str()
    a, b = json.loads(serial.read_text()), json.loads(parallel.read_text())
    strip = lambda cases: sorted((c["key"], c["config"], c["trial"], c["response"], c["strict"], c["quality"]) for c in cases)  # noqa: E731
    assert strip(a["cases"]) == strip(b["cases"])
    assert a["configs"] == b["configs"]
    assert a["gates"] == b["gates"]


def test_every_worker_is_busy_when_there_are_as_many_batches_as_workers(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    # One config only (the baseline), in two batches of three: each worker runs one batch.
    result = pytester.runpytest_subprocess(
        SUITE,
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(REPO),
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-limit",
        "6",
        "--steer-batch-size",
        "3",
        "--steer-max-new-tokens",
        "4",
        "--steer-no-cache",
        "-n",
        "2",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["workers: gw0 ran 3 cases, gw1 ran 3 cases"])


@pytest.mark.parametrize("crashing", ["s006", "s002"], ids=["last-of-its-batch", "batch-mates-pending"])
def test_a_crashed_worker_loses_only_its_case(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, crashing: str) -> None:
    """The crashing test's case is lost unless the worker that runs the rest of its batch generates it again (same seed)."""
    pytester.makepyfile(
        crash_one_case=f"""
        import os
        def pytest_runtest_call(item):
            if item.nodeid.endswith("[{crashing}-pasta_alpha10-t0]"):
                os._exit(1)
        """
    )
    out = tmp_path / "results.json"
    result = run_suite(
        pytester,
        tiny_checkpoint,
        "-n",
        "2",
        "-p",
        "crash_one_case",
        "--steer-json",
        str(out),
        "--steer-gate",
        "strict_prompt_accuracy >= 0",
    )
    result.stdout.fnmatch_lines([f"*worker 'gw*' crashed while running*[[]{crashing}-pasta_alpha10-t0[]]*"])
    assert result.stdout.str().count("replacing crashed worker") == 1
    failed = [line for line in result.stdout.lines if line.startswith("FAILED ")]
    assert sum(f"[{crashing}-pasta_alpha10-t0]" in line for line in failed) == 1
    data = json.loads(out.read_text())
    configs = {c["name"]: c for c in data["configs"]}
    assert configs["baseline"]["n_errors"] == 0
    assert len(data["cases"]) == 12
    gate = next(g for g in data["gates"] if g["config"] == "pasta_alpha10")
    if crashing == "s006":  # nothing else of its batch was left to run
        assert len(failed) == 2, failed  # the lost case, once, and the gate its error fails
        assert configs["pasta_alpha10"]["n_errors"] == 1
        assert configs["pasta_alpha10"]["n_prompts"] == 5  # the lost case is an error, not a miss
        assert not gate["passed"]  # the default error budget is 0
    else:  # the replacement worker generated the batch again, this case with it, and sent its record at the end
        assert len(failed) == 1, failed
        assert configs["pasta_alpha10"]["n_errors"] == 0 and configs["pasta_alpha10"]["n_prompts"] == 6
        assert gate["passed"]
        result.stdout.fnmatch_lines(["*note: 1 generated case(s) were reported by no test; this report keeps their records"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED

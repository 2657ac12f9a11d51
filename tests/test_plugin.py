"""End-to-end runs of the plugin through pytester subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "ifeval")


def run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(SUITE, "-p", "no:cacheprovider", "--rootdir", str(REPO), *args)


def test_shipped_suite_on_embedded_model(pytester: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = run_suite(pytester, "--steer-alpha", "10", "--steer-limit", "2", "--steer-max-new-tokens", "8", "--steer-json", str(out), "-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*test_follows_instructions[[]s001-baseline-t0[]]*", "*test_follows_instructions[[]s002-pasta_alpha10-t0[]]*"]
    )
    result.stdout.fnmatch_lines(["*steering trade-off*", "config*prompts*strict prompt*", "baseline*2*", "pasta_alpha10*2*"])
    data = json.loads(out.read_text())
    assert data["schema_version"] == 2
    assert [(c["name"], c["method"]) for c in data["configs"]] == [("baseline", None), ("pasta_alpha10", "pasta")]
    assert data["configs"][1]["alpha"] == 10.0
    assert data["run"]["steering"]["pasta_alpha10"] == {
        "method": "pasta",
        "params": {"alpha": 10.0, "heads": None, "scale_position": "include"},
    }
    assert set(data["configs"][0]["metrics"]) >= {
        "strict_prompt_accuracy",
        "strict_instruction_accuracy",
        "loose_prompt_accuracy",
        "loose_instruction_accuracy",
    }
    assert len(data["cases"]) == 4
    case = data["cases"][0]
    assert case["model"]["revision"].startswith("sha256:")
    assert 0 < case["n_new_tokens"] <= 8
    assert len(case["strict"]) == len(case["instruction_id_list"])
    # the table prints the same numbers as the JSON
    for config in data["configs"]:
        mean = config["metrics"]["strict_prompt_accuracy"]["mean"]
        result.stdout.fnmatch_lines([f"{config['name']} *{mean:.3f} *"])


def test_plugin_is_inert_without_steer_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys
        def test_nothing_heavy_was_imported():
            assert "torch" not in sys.modules
            assert "transformers" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    output = result.stdout.str()
    assert "[steer]" not in output
    assert "steering trade-off" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steer-alpha", "-3"], "*--steer-alpha*alpha '-3' must be a positive number*"),
        (["--steer-alpha", "ten"], "*--steer-alpha*alpha 'ten' is not a number*"),
        (["--steer-trials", "0"], "*--steer-trials*must be a positive integer*"),
        (["--steer-scale-position", "middle"], "*--steer-scale-position*'middle' is not one of include, exclude, generation*"),
        (["--steer-heads", "8-x"], "*--steer-heads*heads '8-x': item '8-x' at position 0 is not a layer number*"),
        (["--steer-trials", "abc"], "*--steer-trials*'abc' is not a whole number; expected a positive integer*"),
        (["--steer-instruction-ids", "no:such_id"], "*--steer-instruction-ids*unknown instruction id 'no:such_id'*"),
    ],
)
def test_bad_options_stop_before_anything_runs(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = run_suite(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steer-dataset", "no_such_file.jsonl"], "*--steer-dataset*is not 'builtin', an existing file, or a hub dataset id*"),
        (["--steer-model", "/no/such/model"], "*neither an existing local path nor a Hugging Face model id*"),
    ],
)
def test_bad_input_fails_collection_with_one_message(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = run_suite(pytester, *args)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([message, "*1 error*"])
    assert "passed" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_dataset_with_wrong_columns(pytester: pytest.Pytester, tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"key": 1, "text": "hello", "instruction_id_list": [], "kwargs": []}) + "\n")
    result = run_suite(pytester, "--steer-dataset", str(data))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*lacks the column(s) [[]'prompt'[]]*"])


def test_strict_mode_fails_cases_with_reasons(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    result = run_suite(
        pytester,
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-limit",
        "3",
        "--steer-max-new-tokens",
        "4",
        "--steer-case-mode",
        "strict",
        "--steer-greedy",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*instruction(s) not followed (strict)*"])


def test_record_mode_reports_misses_apart(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    result = run_suite(
        pytester, "--steer-model", str(tiny_checkpoint), "--steer-limit", "3", "--steer-max-new-tokens", "4", "--steer-trials", "2"
    )
    assert result.ret == pytest.ExitCode.OK
    outcomes = result.parseoutcomes()
    assert outcomes.get("missed", 0) + outcomes.get("passed", 0) == 6
    assert "failed" not in outcomes


def test_uncached_hub_model_offline_fails_collection(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    result = run_suite(pytester, "--steer-model", "some-org/uncached-model")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*cannot load model 'some-org/uncached-model'*Offline alternatives*the model 'embedded'*"])


def test_collect_only_lists_cases_and_the_plan_and_reports_nothing(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = run_suite(
        pytester,
        "--steer-alpha",
        "10",
        "--steer-limit",
        "2",
        "--steer-trials",
        "2",
        "--steer-max-new-tokens",
        "16",
        "--steer-cache-dir",
        str(tmp_path / "empty-cache"),
        "--collect-only",
        "-q",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*test_follows_instructions[[]s001-baseline-t0[]]", "*test_follows_instructions[[]s002-pasta_alpha10-t1[]]", "8 tests collected*"]
    )
    result.stdout.fnmatch_lines(
        [
            "[[]steer[]] plan: 2 prompts × 2 configs × 2 trials = 8 cases; 8 to generate (0 in the response cache) × up to 16 new tokens "
            "= 128 tokens at most; no estimate yet*"
        ]
    )
    assert "steering trade-off" not in result.stdout.str()
    assert "[steer] loaded" not in result.stdout.str()


def test_progress_lines_leave_the_status_letters_readable(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    args = ["--steer-model", str(tiny_checkpoint), "--steer-limit", "3", "--steer-alpha", "10", "--steer-max-new-tokens", "4"]
    args += ["--steer-no-cache"]
    serial = run_suite(pytester, *args)
    # the status letters go on under a batch's progress line; the file name they follow is written once
    # the configs' rows share one batch: one progress line for the six cases
    batch = "[[]steer[]] baseline+pasta_alpha10: batch 1/1, 6/6 cases*"
    serial.stdout.fnmatch_lines([batch, "[.m][.m][.m][.m][.m][.m]*"], consecutive=True)
    assert serial.stdout.str().count("test_ifeval.py") == 1, serial.stdout.str()
    verbose = run_suite(pytester, *args, "-v")
    # under -v each test's id is written once, its outcome after any progress line its setup wrote
    verbose.stdout.fnmatch_lines(["*test_follows_instructions[[]s001-baseline-t0[]] ", batch])
    verbose.stdout.fnmatch_lines([batch, "[MP]*"], consecutive=True)
    assert all(verbose.stdout.str().count(f"[s00{k}-{c}-t0]") == 1 for k in (1, 2, 3) for c in ("baseline", "pasta_alpha10"))
    for mode in (["-q"], ["-v", "-rA", "--tb=short"]):
        parallel = run_suite(pytester, *args, "-n", "2", *mode)
        assert parallel.ret == 0, parallel.stdout.str()
        assert "INTERNALERROR" not in parallel.stdout.str()
        # workers' progress reaches the controller's terminal, on lines of its own
        parallel.stdout.re_match_lines([r"\[steer\] gw[01]: baseline\+pasta_alpha10: batch 1/1, 6/6 cases.*"])
        assert all(line.startswith("[steer]") for line in parallel.stdout.lines if "[steer]" in line)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steer-heads", "99"], "--steer-heads '99' names layer 99, but the model has 2 layers"),
        (
            ["--steer-max-new-tokens", "100000"],
            "--steer-max-new-tokens 100000: the longest prompt has * tokens and the model's context holds 512",
        ),
        (["--steer-gate", "alpha=7: quality >= 0"], "--steer-gate 'alpha=7: quality >= 0' selects alpha 7, which this run does not have"),
        (["--steer-json", "/proc/forbidden/r.json"], "--steer-json /proc/forbidden/r.json: cannot write there*"),
        (["--steer-baseline", "missing.json"], "--steer-baseline missing.json: no such file*"),
        (["--steer-device", "cuda:7"], "--steer-device 'cuda:7'*"),
    ],
    ids=["heads", "context", "gate-selector", "output-path", "baseline-file", "device"],
)
def test_bad_input_is_refused_at_collection_in_one_message(
    pytester: pytest.Pytester, tiny_checkpoint: Path, args: list[str], message: str
) -> None:
    result = run_suite(pytester, "--steer-model", str(tiny_checkpoint), "--steer-alpha", "10", "--steer-limit", "2", *args)
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output  # an error during collection: nothing ran
    result.stdout.fnmatch_lines([f"*pytest-steer: {message}*"])
    assert output.count("pytest-steer: --steer-") == 1
    assert "[steer] loaded" not in output and "Traceback" not in output


def test_alpha_one_is_noted_and_reuses_the_baseline_responses(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = run_suite(
        pytester,
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-alpha",
        "1",
        "--steer-limit",
        "2",
        "--steer-max-new-tokens",
        "4",
        "--steer-cache-dir",
        str(tmp_path / "cache"),
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*pasta_alpha1 is the identity (log 1 = 0): its responses are the baseline's*"])
    result.stdout.fnmatch_lines(["[[]steer[]] baseline+pasta_alpha1: batch 1/1, 4/4 cases (2 from cache)*"])


def test_an_interrupted_run_says_so_and_blames_no_crash(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The configs' shared batch was generated before the interrupt: all six records are kept, five of them reported by
    no test."""
    pytester.makepyfile(
        interrupt_second="""
        def pytest_runtest_call(item):
            if item.nodeid.endswith("[s002-baseline-t0]"):
                raise KeyboardInterrupt
        """
    )
    out = tmp_path / "results.json"
    result = run_suite(
        pytester,
        "-p",
        "interrupt_second",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-limit",
        "3",
        "--steer-max-new-tokens",
        "4",
        "--steer-no-cache",
        "--steer-alpha",
        "10",
        "--steer-json",
        str(out),
    )
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    result.stdout.fnmatch_lines(["*note: 5 generated case(s) were reported by no test (interrupted); this report keeps their records"])
    assert "crashed" not in output and "did not report" not in output
    data = json.loads(out.read_text())
    assert data["n_lost"] == 0 and data["selection"]["stopped"] is None  # every case has its record: the report is whole
    expected = sorted((f"s00{i}", config, None) for i in (1, 2, 3) for config in ("baseline", "pasta_alpha10"))
    assert sorted((c["key"], c["config"], c["error"]) for c in data["cases"]) == expected

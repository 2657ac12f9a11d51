"""Mistakes knowable before generation stop the run at collection, in one message naming option, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "ifeval")
RUN = ("--steer-limit", "2", "--steer-max-new-tokens", "4", "--steer-no-cache")

REMIND_CONFTEST = """
from pytest_steer.steering import PreparedPrompt, SteeringMethod


class Remind(SteeringMethod):
    name = "remind"

    def __init__(self, times: int = 1) -> None:
        self.times = times

    def params(self):
        return {"times": self.times}

    def prepare(self, prompt, highlights):
        return PreparedPrompt(prompt + " Remember." * self.times)


def pytest_steer_methods():
    return [Remind]
"""


def run_suite(pytester: pytest.Pytester, model: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(SUITE, "-p", "no:cacheprovider", "--rootdir", str(REPO), "--steer-model", str(model), *RUN, *args)


def assert_refused(result: pytest.RunResult, message: str) -> None:
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output  # an error during collection: nothing ran
    result.stdout.fnmatch_lines([f"*pytest-steer: {message}*"])
    assert output.count("pytest-steer: --steer-") == 1
    assert "[steer] loaded" not in output and "Traceback" not in output and "passed" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--steer-method", "emphasis:foo=1"],
            "--steer-method emphasis:foo=1: emphasis takes no parameter 'foo'; it takes marker (str, default '**')",
        ),
        (["--steer-method", "emphasis:marker="], "--steer-method emphasis:marker=: emphasis marker must be a non-empty string*"),
        (
            ["--steer-method", "emphasis", "--steer-quality", "none", "--steer-fail-if", "quality - baseline < -1"],
            "--steer-fail-if 'quality - baseline < -1' reads quality, which --steer-quality none does not score; "
            "score quality with --steer-quality fluency*",
        ),
    ],
    ids=["unknown-parameter", "value-the-method-refuses", "quality-gate-without-quality"],
)
def test_refused_at_collection(pytester: pytest.Pytester, tiny_checkpoint: Path, args: list[str], message: str) -> None:
    assert_refused(run_suite(pytester, tiny_checkpoint, *args), message)


def test_a_registered_method_gets_typed_values_and_refuses_others(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    pytester.makeconftest(REMIND_CONFTEST)
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    assert steer_case.record.config == 'remind_times2'\n")
    args = ["-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), *RUN]
    refused = pytester.runpytest_subprocess(*args, "--steer-method", "remind:times=abc")
    assert_refused(refused, "--steer-method remind:times=abc: remind parameter 'times': 'abc' is not an int; expected a whole number")
    ran = pytester.runpytest_subprocess(*args, "--steer-method", "remind:times=2", "-k", "remind")
    assert ran.ret == 0, ran.stdout.str()
    ran.stdout.fnmatch_lines(["configs: baseline (unsteered); remind_times2 (remind: times 2)"])


def baseline_of_other_settings(model: Path, tmp_path: Path) -> Path:
    """A saved baseline of --steer-max-new-tokens 8 and --steer-quality none: RUN differs in both."""
    from pytest_steer.plan.cases import steering_configs
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.plan.spec import RunSpec
    from pytest_steer.stats.baseline import save_run

    saved_settings = SteerSettings(model=str(model), limit=2, max_new_tokens=8, quality="none")
    run = RunSpec.from_settings(saved_settings, tuple(steering_configs(()))).fingerprint({"name": "m"}, 2, tmp_path)
    return save_run(run, [], tmp_path / "baseline.json")


def test_a_baseline_saved_with_other_settings_is_refused_before_generation(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    saved = baseline_of_other_settings(tiny_checkpoint, tmp_path)
    result = run_suite(pytester, tiny_checkpoint, "--steer-baseline", str(saved))
    assert_refused(
        result,
        f"--steer-baseline {saved} was saved with other settings than this run's: --steer-max-new-tokens 8 (this run: 4); "
        "--steer-quality 'none' (this run: 'fluency'); run with the saved settings to compare with it, or save a baseline*",
    )


@pytest.mark.parametrize("refusal", ["no-gate", "missing-dataset", "baseline-of-other-settings"])
def test_sequential_runs_refuse_at_collection_as_fixed_runs_do(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, refusal: str
) -> None:
    gated = ["--steer-gate", "strict_prompt_accuracy >= 0", "--steer-min-prompts", "2"]
    args, message = {
        "no-gate": ([], "--steer-sequential stops generating once every gate and fail-if is decided, and this run has none; add a*"),
        "missing-dataset": (
            [*gated, "--steer-dataset", str(tmp_path / "missing.jsonl")],
            f"--steer-dataset '{tmp_path / 'missing.jsonl'}'*",
        ),
        "baseline-of-other-settings": (
            [*gated, "--steer-baseline", str(baseline_of_other_settings(tiny_checkpoint, tmp_path))],
            "--steer-baseline * was saved with other settings than this run's: --steer-max-new-tokens 8 (this run: 4)*",
        ),
    }[refusal]
    sequential = run_suite(pytester, tiny_checkpoint, *args, "--steer-sequential")
    assert "INTERNALERROR" not in sequential.stdout.str() + sequential.stderr.str(), sequential.stdout.str()
    assert_refused(sequential, message)
    if args:  # the same refusal, word for word, as without --steer-sequential
        fixed = run_suite(pytester, tiny_checkpoint, *args)
        assert_refused(fixed, message)
        refused = [line for line in sequential.stdout.lines if "pytest-steer: --steer-" in line]
        assert refused == [line for line in fixed.stdout.lines if "pytest-steer: --steer-" in line]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--steer-limit", "8", "--steer-fail-if", "strict_prompt_accuracy < 0"],
            "--steer-min-prompts 10: the gates and fail-ifs need at least 10 evaluated prompts, and this run selects 8; "
            "raise --steer-limit to 10, or lower --steer-min-prompts to 8",
        ),
        (  # a shard holds 4 of the 8 prompts; the whole run still has too few
            ["--steer-limit", "8", "--steer-shard", "1/2", "--steer-gate", "strict_prompt_accuracy >= 0"],
            "--steer-min-prompts 10: the gates and fail-ifs need at least 10 evaluated prompts, and this run selects 8; *",
        ),
    ],
    ids=["limit", "shard-of-too-few"],
)
def test_too_few_prompts_for_the_checks_are_refused_before_generation(
    pytester: pytest.Pytester, tiny_checkpoint: Path, args: list[str], message: str
) -> None:
    result = run_suite(pytester, tiny_checkpoint, *args)
    assert_refused(result, message)
    assert "not evaluated" not in result.stdout.str()


def test_a_shard_or_a_selection_of_a_run_with_enough_prompts_is_not_refused(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    """Each shard of 12 prompts holds 6 and -k keeps 1: the whole run has the 10 its checks need, merge or a full run decides."""
    gated = ["--steer-limit", "12", "--steer-fail-if", "strict_prompt_accuracy < 0", "--collect-only", "-q"]
    for extra in (["--steer-shard", "2/2"], ["-k", "s001"]):
        result = run_suite(pytester, tiny_checkpoint, *gated, *extra)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        assert "pytest-steer: --steer-min-prompts" not in result.stdout.str()

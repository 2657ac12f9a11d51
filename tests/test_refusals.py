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


def test_a_baseline_saved_with_other_settings_is_refused_before_generation(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from pytest_steer.baseline import save_run
    from pytest_steer.cases import steering_configs
    from pytest_steer.options import SteerSettings
    from pytest_steer.spec import RunSpec

    saved_settings = SteerSettings(model=str(tiny_checkpoint), limit=2, max_new_tokens=8, quality="none")
    run = RunSpec.from_settings(saved_settings, tuple(steering_configs(()))).fingerprint({"name": "m"}, 2, tmp_path)
    saved = save_run(run, [], tmp_path / "baseline.json")
    result = run_suite(pytester, tiny_checkpoint, "--steer-baseline", str(saved))
    assert_refused(
        result,
        f"--steer-baseline {saved} was saved with other settings than this run's: --steer-max-new-tokens 8 (this run: 4); "
        "--steer-quality 'none' (this run: 'fluency'); run with the saved settings to compare with it, or save a baseline*",
    )

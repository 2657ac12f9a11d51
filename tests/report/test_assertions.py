"""The assertion helpers fail at the test's own line, with their message once."""

from __future__ import annotations

import pytest

TEST = """
from pytest_steer.assertions import assert_follows_instructions, assert_quality_at_least
from pytest_steer.plan.cases import SteeringConfig, Case
from pytest_steer.plan.data import PromptRow
from pytest_steer.run.records import CaseRecord
from pytest_steer.steer_case import SteerCase

ROW = PromptRow("s001", "Answer in lowercase.", (), ("change_case:english_lowercase",), ({},))
RECORD = CaseRecord(
    key="s001", config="baseline", alpha=None, trial=0, seed=1, prompt=ROW.prompt, response="SHOUTED ANSWER",
    instruction_id_list=["change_case:english_lowercase"], strict=[False], loose=[False], follow_all_strict=False,
    follow_all_loose=False, quality=-3.0, n_new_tokens=2, missing_spans=[], cached=False,
)
CASE = SteerCase(Case(ROW, SteeringConfig("baseline", None), 0, 1, ()), RECORD)

def test_follows():
    assert_follows_instructions(CASE)

def test_quality():
    assert_quality_at_least(CASE, -2.0)
"""


def test_helpers_fail_at_the_test_line_with_one_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_helpers=TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    # The short summary repeats each message, whole when pytest runs under CI (no truncation there), so count
    # only the tracebacks.
    tracebacks = output.split("short test summary info")[0]
    assert tracebacks.count("1 of 1 instruction(s) not followed (strict)") == 1
    assert tracebacks.count("quality -3.000 is below -2.000") == 1
    assert "pytest_steer/assertions.py" not in output and "assertions.py:" not in output
    result.stdout.fnmatch_lines(["*assert_follows_instructions(CASE)", "E *AssertionError: s001-baseline-t0: 1 of 1 instruction(s)*"])

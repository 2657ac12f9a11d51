"""Assertion helpers for steer suites; pytest rewrites them so failures read well.

>>> def test_case(steer_case):
...     assert_follows_instructions(steer_case)
...     assert_quality_at_least(steer_case, -2.0)
"""

from __future__ import annotations

from pytest_steer.steer_case import SteerCase


def assert_follows_instructions(case: SteerCase, *, loose: bool = False) -> None:
    """Every instruction of the case's prompt is followed (strict scoring unless ``loose``)."""
    from pytest_steer.ifeval import describe_failure

    verdicts = case.record.loose if loose else case.record.strict
    missed = [
        describe_failure(instruction_id, kwargs, case.response, case.prompt)
        for instruction_id, kwargs, followed in zip(case.instruction_id_list, case.kwargs, verdicts)
        if not followed
    ]
    scoring = "loose" if loose else "strict"
    assert not missed, (
        f"{case.record.case_id}: {len(missed)} of {len(verdicts)} instruction(s) not followed ({scoring}):\n  - "
        + "\n  - ".join(missed)
        + f"\nresponse: {case.response[:500]!r}"
    )


def assert_quality_at_least(case: SteerCase, threshold: float) -> None:
    """The case's quality score (reward or fluency) is at least ``threshold``."""
    assert case.quality is not None, f"{case.record.case_id}: no quality score (is --steer-quality none?)"
    assert case.quality >= threshold, (
        f"{case.record.case_id}: quality {case.quality:.3f} is below {threshold:.3f}\nresponse: {case.response[:500]!r}"
    )

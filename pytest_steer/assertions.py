"""Assertion helpers for steer suites. A failure shows its message once, at the test's own line
(the helpers' frames are hidden from the traceback).

>>> def test_case(steer_case):
...     assert_follows_instructions(steer_case)
...     assert_quality_at_least(steer_case, -2.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_steer.run.records import CaseRecord
from pytest_steer.steer_case import SteerCase


def assert_follows_instructions(case: SteerCase, *, loose: bool = False) -> None:
    """Every instruction of the case's prompt is followed (strict scoring unless ``loose``)."""
    __tracebackhide__ = True
    message = missed_instructions(case.record, case.kwargs, loose=loose)
    if message is not None:
        raise AssertionError(message)


def missed_instructions(record: CaseRecord, kwargs: Sequence[Mapping[str, Any]], *, loose: bool = False) -> str | None:
    """What the case's response missed, instruction by instruction; None when it followed them all."""
    from pytest_steer.ifeval import describe_failure

    verdicts = record.loose if loose else record.strict
    missed = [
        describe_failure(instruction_id, dict(arguments), record.response, record.prompt)
        for instruction_id, arguments, followed in zip(record.instruction_id_list, kwargs, verdicts)
        if not followed
    ]
    if not missed:
        return None
    scoring = "loose" if loose else "strict"
    return (
        f"{record.case_id}: {len(missed)} of {len(verdicts)} instruction(s) not followed ({scoring}):\n  - "
        + "\n  - ".join(missed)
        + f"\nresponse: {record.response[:500]!r}"
    )


def assert_quality_at_least(case: SteerCase, threshold: float) -> None:
    """The case's quality score (reward or fluency) is at least ``threshold``."""
    __tracebackhide__ = True
    if case.quality is None:
        raise AssertionError(f"{case.record.case_id}: no quality score (is --steer-quality none?)")
    if case.quality < threshold:
        raise AssertionError(
            f"{case.record.case_id}: quality {case.quality:.3f} is below {threshold:.3f}\nresponse: {case.response[:500]!r}"
        )

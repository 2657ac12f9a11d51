"""Verdicts that are not collected tests (gates, baseline comparisons) reported as tests.

Each verdict goes through pytest's own report hooks, so the terminal, the exit code,
JUnit XML and pytest-html agree on it. A check that pytest's selection left undecided
(:mod:`pytest_steer.run.selection`) is reported as skipped, with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_steer.report.junit import add_suite_properties
from pytest_steer.report.junit import properties as junit_properties


def report_outcome(config: pytest.Config, nodeid: str, outcome: str, message: str, details: dict[str, Any]) -> None:
    """``outcome``: passed, failed or skipped; ``message`` is the failure's or the skip's text."""
    hook = config.hook
    path, _, name = nodeid.partition("::")
    location = (path, None, name)
    properties = junit_properties((f"steer.{key}", value) for key, value in details.items())
    longrepr: Any = {"passed": None, "failed": message, "skipped": (path, None, f"Skipped: {message}")}[outcome]
    phases = (
        ("setup", "passed", None, []),
        ("call", outcome, longrepr, []),
        ("teardown", "passed", None, properties),  # JUnit writes properties from the teardown report
    )
    hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
    for when, phase_outcome, phase_longrepr, user_properties in phases:
        report = pytest.TestReport(nodeid, location, {}, phase_outcome, phase_longrepr, when, user_properties=user_properties)
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)


def _verdict(passed: bool) -> str:
    return "passed" if passed else "failed"


def gate_nodeid(config: str | None, gate: str) -> str:
    """``steer-gates::<config>::gate[<gate>]``: the expression in the trailing brackets, where pytest
    reads a node id's parameters, so brackets inside it (``follow_rate[<id>]``) are shown as written."""
    return f"steer-gates::{config or 'no config'}::gate[{gate}]"


def count_verdicts(results: Any) -> int:
    """How many outcomes :func:`report_verdicts` reports, to count them as collected before they are."""
    undecided = results.selection.undecided if results.selection is not None else ()
    return len(results.gates) + len(results.comparisons) + len(results.comparison_errors) + len(undecided)


def report_verdicts(config: pytest.Config, results: Any) -> int:
    """Report every gate, comparison, refused comparison and undecided check of ``results``; return how many."""
    add_suite_properties(config, results.run, results.choice)
    for gate in results.gates:
        report_outcome(config, gate_nodeid(gate.config, gate.label), _verdict(gate.passed), gate.message, gate.to_dict())
    for comparison in results.comparisons:
        nodeid = f"steer-baseline::{comparison.config}::{comparison.metric}"
        report_outcome(config, nodeid, _verdict(comparison.passed), comparison.message, comparison.to_dict())
    for error in results.comparison_errors:
        report_outcome(config, "steer-baseline::comparison", "failed", error, {})
    for check in results.selection.undecided if results.selection is not None else ():
        if check.kind == "comparison":
            nodeid = f"steer-baseline::{check.config or 'no config'}::{check.name}"
        else:
            nodeid = gate_nodeid(check.config, check.name)
        report_outcome(config, nodeid, "skipped", check.reason, check.to_dict())
    return count_verdicts(results)

"""Verdicts that are not collected tests (gates, baseline comparisons) reported as tests.

Each verdict goes through pytest's own report hooks, so the terminal, the exit code,
JUnit XML and pytest-html agree on it.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_steer.report.junit import add_suite_properties
from pytest_steer.report.junit import properties as junit_properties


def report_outcome(config: pytest.Config, nodeid: str, passed: bool, message: str, details: dict[str, Any]) -> None:
    hook = config.hook
    path, _, name = nodeid.partition("::")
    location = (path, None, name)
    properties = junit_properties((f"steer.{key}", value) for key, value in details.items())
    phases = (
        ("setup", "passed", None, []),
        ("call", "passed" if passed else "failed", None if passed else message, []),
        ("teardown", "passed", None, properties),  # JUnit writes properties from the teardown report
    )
    hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
    for when, outcome, longrepr, user_properties in phases:
        report = pytest.TestReport(nodeid, location, {}, outcome, longrepr, when, user_properties=user_properties)
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)


def gate_nodeid(config: str | None, gate: str) -> str:
    """``steer-gates::<config>::gate[<gate>]``: the expression in the trailing brackets, where pytest
    reads a node id's parameters, so brackets inside it (``follow_rate[<id>]``) are shown as written."""
    return f"steer-gates::{config or 'no config'}::gate[{gate}]"


def report_verdicts(config: pytest.Config, results: Any) -> int:
    """Report every gate, comparison and refused comparison of ``results``; return how many."""
    add_suite_properties(config, results.run)
    for gate in results.gates:
        report_outcome(config, gate_nodeid(gate.config, gate.gate), gate.passed, gate.message, gate.to_dict())
    for comparison in results.comparisons:
        nodeid = f"steer-baseline::{comparison.config}::{comparison.metric}"
        report_outcome(config, nodeid, comparison.passed, comparison.message, comparison.to_dict())
    for error in results.comparison_errors:
        report_outcome(config, "steer-baseline::comparison", False, error, {})
    return len(results.gates) + len(results.comparisons) + len(results.comparison_errors)

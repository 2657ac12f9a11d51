"""Turns a run's aggregates into verdicts: gates, and the comparison with a saved baseline."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_steer.baseline import BaselineError, load_run, mismatches
from pytest_steer.gates import compare_runs, evaluate_gates, parse_compare_fail
from pytest_steer.options import SteerSettings
from pytest_steer.results import RunResults


@dataclass
class Decisions:
    notes: list[str] = field(default_factory=list)  # worth saying, not failing on
    errors: list[str] = field(default_factory=list)  # a comparison that could not be made


def decide(results: RunResults, settings: SteerSettings) -> Decisions:
    """Fill ``results.gates`` and ``results.comparisons``; return notes and blocking problems."""
    decisions = Decisions()
    results.gates = evaluate_gates(
        settings.gate,
        results.aggregates,
        fail_ifs=settings.fail_if,
        correction=settings.gate_correction,
        max_errors=_budget(settings.max_errors),
        min_prompts=settings.min_prompts,
    )
    if settings.baseline is None:
        return decisions
    try:
        saved = load_run(settings.baseline)
    except BaselineError as exc:
        decisions.errors.append(str(exc))
        return decisions
    notes, blocking = mismatches(results.run, saved.run)
    decisions.notes.extend(notes)
    if blocking:
        decisions.errors.extend(f"--steer-baseline {settings.baseline}: {problem}; nothing was compared" for problem in blocking)
        return decisions
    results.comparisons = compare_runs(results.aggregates, saved.aggregates, parse_compare_fail(settings.compare_fail))
    return decisions


def _budget(value: float) -> int | float:
    return int(value) if value >= 1 or value == 0 else value


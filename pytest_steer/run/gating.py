"""A run's verdicts: its gates, and the comparison with a saved baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_steer.plan.options import SteerSettings
from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.stats.baseline import BaselineError, load_run, mismatches
from pytest_steer.stats.comparison import ComparisonResult, compare_runs, parse_compare_fail
from pytest_steer.stats.gates import GateResult, evaluate_gates


@dataclass
class Verdicts:
    gates: list[GateResult] = field(default_factory=list)
    comparisons: list[ComparisonResult] = field(default_factory=list)
    comparison_errors: list[str] = field(default_factory=list)  # a comparison that could not be made
    notes: list[str] = field(default_factory=list)  # worth saying, not failing on

    def as_fields(self) -> dict[str, Any]:
        return {"gates": self.gates, "comparisons": self.comparisons, "comparison_errors": self.comparison_errors, "notes": self.notes}


def decide(
    aggregates: list[ConfigAggregate], run: dict[str, Any], settings: SteerSettings, gates: list[GateResult] | None = None
) -> Verdicts:
    """The run's verdicts; ``gates`` when a sequential run already decided them, else the fixed design does."""
    if gates is None:
        gates = evaluate_gates(
            settings.gate,
            aggregates,
            fail_ifs=settings.fail_if,
            correction=settings.gate_correction,
            max_errors=error_budget(settings.max_errors),
            min_prompts=settings.min_prompts,
        )
    verdicts = Verdicts(gates=gates)
    if settings.baseline is None:
        return verdicts
    try:
        saved = load_run(settings.baseline)
    except BaselineError as exc:
        verdicts.comparison_errors.append(f"--steer-baseline {exc}")
        return verdicts
    notes, blocking = mismatches(run, saved.run)
    verdicts.notes.extend(notes)
    if blocking:
        verdicts.comparison_errors.extend(f"--steer-baseline {settings.baseline}: {problem}; nothing was compared" for problem in blocking)
        return verdicts
    verdicts.comparisons = compare_runs(aggregates, saved.aggregates, parse_compare_fail(settings.compare_fail))
    return verdicts


def error_budget(value: float) -> int | float:
    """``--steer-max-errors`` as the gates take it: a count, or a fraction below 1."""
    return int(value) if value >= 1 or value == 0 else value

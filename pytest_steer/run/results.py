"""Everything a run produced, in one immutable object that every report renders from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_steer.plan.options import SteerSettings
from pytest_steer.run.selection import RunSelection
from pytest_steer.stats.aggregate import ConfigAggregate, aggregate, deltas_vs_baseline, instruction_deltas_vs_baseline
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.comparison import ComparisonResult
from pytest_steer.stats.gates import GateResult


@dataclass(frozen=True)
class RunResults:
    run: dict[str, Any]  # the run's fingerprint (pytest_steer.plan.spec.RunSpec.fingerprint)
    records: list[dict[str, Any]]
    aggregates: list[ConfigAggregate]
    deltas: dict[str, dict[str, Interval]] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    comparisons: list[ComparisonResult] = field(default_factory=list)
    comparison_errors: list[str] = field(default_factory=list)  # a saved baseline that could not be compared
    notes: list[str] = field(default_factory=list)  # worth saying, not failing on
    n_lost: int = 0  # cases collected but never reported (e.g. their worker crashed)
    selection: RunSelection | None = None  # what pytest's selection kept of the collected cases; None when not known
    sequential: dict[str, Any] | None = None  # where sequential decisions stopped: prompts_used, prompts_total, looks
    min_prompts: int = SteerSettings.min_prompts  # --steer-min-prompts: fewer prompts give no interval per instruction id
    choice: dict[str, Any] | None = None  # auto: the path from the grid to the chosen value (stats.choice.StrengthChoice)

    @property
    def n_cached(self) -> int:
        """Cases whose response was read from the response cache instead of generated."""
        return sum(bool(record.get("cached")) for record in self.records)

    def instruction_deltas(self) -> dict[str, dict[str, dict[str, Interval]]]:
        """Per steered config and instruction id, the paired deltas vs the baseline (:func:`instruction_deltas_vs_baseline`)."""
        return instruction_deltas_vs_baseline(self.aggregates, min_prompts=self.min_prompts)

    @classmethod
    def from_records(cls, run: dict[str, Any], records: Sequence[Mapping[str, Any]], *, seed: int, **verdicts: Any) -> RunResults:
        """Aggregate records under a run fingerprint; ``verdicts`` are the remaining fields (gates, ...). A run that
        chose a value (``choice``) aggregates its evaluation prompts only: the selection prompts chose it."""
        ordered = sorted((dict(r) for r in records), key=lambda r: (r["config"], r["key"], r["trial"]))
        choice = verdicts.get("choice")
        evaluation = set(choice["evaluation_prompts"]) if choice else None
        aggregates = aggregate([r for r in ordered if evaluation is None or r["key"] in evaluation], seed=seed)
        return cls(run=run, records=ordered, aggregates=aggregates, deltas=deltas_vs_baseline(aggregates), **verdicts)

"""Choosing a steering strength with a guarantee: Learn-then-Test over a grid, in a fixed sequence.

The constraint is the run's fail-ifs on the steered configs (``quality - baseline < -0.5``):
for each candidate strength the null hypothesis is "the constraint is violated", i.e. the
fail-if's expression holds in truth. The candidate is *certified* when the data on the
selection prompts rejects that null: the complement of every fail-if that selects it is
shown (its confidence bound clears the threshold) at the run's one-sided error. With
several fail-ifs a candidate must clear each one (an intersection-union test: no
correction is needed).

The candidates are tested from the weakest to the strongest and testing stops at the first
that is not certified (fixed-sequence testing, Angelopoulos et al. 2021, "Learn then
Test"): the family-wise error over the whole grid stays at the one-sided error without a
correction, so the chance that any certified strength violates the constraint, and with it
the chosen one, is at most that error. Among the certified strengths the one with the best
instruction following on the selection prompts is chosen (ties go to the weaker). No
certified strength chooses none.

The selection prompts choose; the evaluation prompts, which the choice never saw, report
the chosen strength's effect (the winner's curse stays on the selection side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.stats.gate_language import Gate, Selector
from pytest_steer.stats.gates import evaluate_gates

COMPLEMENT = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def certifying_gate(fail_if: Gate, config: str) -> Gate:
    """The gate whose showing on ``config`` rejects "the fail-if's expression holds": its complement."""
    op = COMPLEMENT[fail_if.op]
    text = f"{config}: {fail_if.lhs} {op} {fail_if.threshold:g}"
    return Gate(text, Selector("name", config), fail_if.metric, fail_if.delta, op, fail_if.threshold)


@dataclass(frozen=True)
class Candidate:
    """One strength of the grid as the selection prompts measured it."""

    value: float
    config: str
    constraint_estimate: float | None  # the binding constraint's estimate (the one with the largest p-value)
    constraint_bound: float | None  # its confidence bound that certifies when it clears the threshold
    p_value: float | None  # of "the constraint is violated"; the largest over the constraints
    following_estimate: float | None
    certified: bool
    tested: bool  # False: the fixed sequence had stopped at a weaker strength
    prompts_used: int
    reason: str = ""  # why it is not certified, or why it was not tested

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "config": self.config,
            "constraint_estimate": self.constraint_estimate,
            "constraint_bound": self.constraint_bound,
            "p_value": self.p_value,
            "following_estimate": self.following_estimate,
            "certified": self.certified,
            "tested": self.tested,
            "prompts_used": self.prompts_used,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class StrengthChoice:
    """The path from the grid to the chosen strength (results.json's ``choice``)."""

    method: str
    parameter: str
    constraint: list[str]  # the fail-ifs read as the constraint
    following: str  # the metric the certified strengths are ranked by
    error: float  # the one-sided error the guarantee holds at
    candidates: list[Candidate]
    chosen: float | None
    chosen_config: str | None
    reason: str  # why this strength (or none) was chosen
    selection_prompts: list[str] = field(default_factory=list)
    evaluation_prompts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "parameter": self.parameter,
            "constraint": list(self.constraint),
            "following": self.following,
            "error": self.error,
            "candidates": [candidate.to_dict() for candidate in self.candidates],
            "chosen": self.chosen,
            "chosen_config": self.chosen_config,
            "reason": self.reason,
            "selection_prompts": list(self.selection_prompts),
            "evaluation_prompts": list(self.evaluation_prompts),
        }


def choose_strength(
    aggregates: Sequence[ConfigAggregate],
    grid: Sequence[tuple[float, str]],
    constraints: Sequence[Gate],
    *,
    following: str,
    max_errors: int | float,
    min_prompts: int,
) -> tuple[list[Candidate], float | None, str | None, str]:
    """Test the ``grid`` (value, config name), weakest first, against ``constraints`` on the selection
    ``aggregates`` (the baseline's and the candidates'); returns the candidates, the chosen value, its config
    and why. Each bound is read at the aggregates' one-sided error: the guarantee's level."""
    by_name = {agg.name: agg for agg in aggregates}
    baseline = next((agg for agg in aggregates if agg.is_baseline), None)
    candidates: list[Candidate] = []
    stopped_at: str | None = None
    for value, config in sorted(grid):
        agg = by_name.get(config)
        follow = agg.interval(following) if agg is not None else None
        follow_estimate = None if follow is None or not follow.is_defined else follow.mean
        prompts = agg.n_prompts if agg is not None else 0
        if stopped_at is not None:
            why = f"not tested: the fixed sequence stopped at {stopped_at}"
            candidates.append(Candidate(value, config, None, None, None, follow_estimate, False, False, prompts, why))
            continue
        candidate = _test(value, config, agg, baseline, constraints, follow_estimate, max_errors, min_prompts)
        candidates.append(candidate)
        if not candidate.certified:
            stopped_at = config
    certified = [c for c in candidates if c.certified]
    if not certified:
        first = candidates[0] if candidates else None
        why = "no strength was certified" + (f": the weakest, {first.config}, {first.reason}" if first else "")
        return candidates, None, None, why
    best = max(certified, key=lambda c: (_rank(c.following_estimate), -c.value))
    why = (
        f"{len(certified)} of {len(candidates)} strengths certified; {best.config} follows best among them "
        f"({following} {_format(best.following_estimate)} on the selection prompts)"
    )
    return candidates, best.value, best.config, why


def _test(
    value: float,
    config: str,
    agg: ConfigAggregate | None,
    baseline: ConfigAggregate | None,
    constraints: Sequence[Gate],
    follow_estimate: float | None,
    max_errors: int | float,
    min_prompts: int,
) -> Candidate:
    prompts = agg.n_prompts if agg is not None else 0
    if agg is None:
        return Candidate(value, config, None, None, None, follow_estimate, False, True, 0, "has no case on the selection prompts")
    gates = [certifying_gate(gate, config) for gate in constraints if gate.selector.matches(agg, delta=gate.delta)]
    if not gates:
        return Candidate(value, config, None, None, None, follow_estimate, False, True, prompts, "no constraint selects it")
    involved = [agg] + ([baseline] if baseline is not None else [])
    results = evaluate_gates(gates, involved, max_errors=max_errors, min_prompts=min_prompts, correction="none")
    binding = max(results, key=lambda r: (r.p_value is None, r.p_value or 0.0))
    certified = all(result.passed for result in results)
    observed = binding.observed
    bound = None
    if observed is not None:
        bound = observed.ci_low if binding.check.gate.bound == "ci_low" else observed.ci_high
    reason = "" if certified else f"did not show {binding.check.gate.lhs} {binding.check.gate.op} {binding.threshold:g} ({binding.message})"
    return Candidate(
        value,
        config,
        None if observed is None else observed.mean,
        bound,
        binding.p_value,
        follow_estimate,
        certified,
        True,
        prompts,
        reason,
    )


def _rank(estimate: float | None) -> float:
    return float("-inf") if estimate is None else estimate


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

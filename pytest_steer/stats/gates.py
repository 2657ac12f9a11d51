"""A run's gates and fail-ifs judged as one family on its config aggregates.

The expressions are those of :mod:`pytest_steer.stats.gate_language`. Each selected config
gives one result; a selector matching no config gives one failing result.

* A check is decided by a confidence bound, never the point estimate: ``>=`` and ``>``
  are shown when ``ci_low`` clears the threshold, ``<=`` and ``<`` when ``ci_high`` does.
  A gate passes when shown, a fail-if fails when shown.
* A delta gate bounds the paired per-prompt difference ``config - baseline`` over the
  prompts both evaluated (:func:`pytest_steer.stats.aggregate.compare`).
* With Holm's correction the bounds are Holm's step-down bounds over every tested check
  (:mod:`pytest_steer.stats.holm`).
* A check refuses to pass (in both forms) when a config involved has more errored cases
  than the error budget, when fewer prompts than the minimum were evaluated, or when the
  metric is missing (e.g. ``quality`` with quality scoring off).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_steer.stats.aggregate import ConfigAggregate, compare_bootstrap
from pytest_steer.stats.bootstrap import Bootstrap, Interval
from pytest_steer.stats.gate_language import Check, CheckForm, Gate, parse_checks
from pytest_steer.stats.holm import holm_steps
from pytest_steer.stats.levels import CONFIDENCE, CORRECTIONS, one_sided_error


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate or fail-if on one config (``config`` is ``None`` when none matched).

    ``observed`` is the interval the decision used: at ``confidence`` (two-sided), which is
    the run's level without correction and wider under Holm's. ``shown`` says whether the
    data showed the expression; ``p_value`` is its one-sided bootstrap p-value and
    ``detectable`` the interval's half-width, about the smallest effect this run could
    show. The last four are ``None`` for a check that could not be evaluated.
    """

    check: Check
    config: str | None
    passed: bool
    observed: Interval | None
    message: str
    shown: bool | None = None
    p_value: float | None = None
    confidence: float | None = None
    detectable: float | None = None

    @property
    def label(self) -> str:
        return self.check.label

    @property
    def form(self) -> CheckForm:
        return self.check.form

    @property
    def threshold(self) -> float:
        return self.check.gate.threshold

    def observation(self) -> str:
        """``<config>: <lhs> = <interval>``: what the message says the data showed, before the rule."""
        return observation(self.config, self.check.gate, self.observed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.label,
            "form": self.form.value,
            "config": self.config,
            "passed": self.passed,
            "shown": self.shown,
            "observed": None if self.observed is None else self.observed.to_dict(),
            "threshold": self.threshold,
            "confidence": self.confidence,
            "p_value": self.p_value,
            "detectable": self.detectable,
            "message": self.message,
        }


@dataclass
class _Pending:
    """One check on one config while the family is being judged."""

    check: Check
    config: ConfigAggregate
    replicates: Bootstrap | None
    reasons: list[str]
    p_value: float = math.nan
    tail: float = math.nan  # error allowed to this check's bound after the correction
    rank: int = 0  # 1-based position in Holm's order
    family_size: int = 0  # checks tested together
    shown: bool = False
    stopped_by: str | None = None  # shown at its own level, but Holm's step-down stopped here first

    @property
    def tested(self) -> bool:
        return not self.reasons and self.replicates is not None


def evaluate_gates(
    gates: Iterable[Gate | str],
    aggregates: Sequence[ConfigAggregate],
    *,
    max_errors: int | float,
    min_prompts: int,
    fail_ifs: Iterable[Gate | str] = (),
    correction: str = "holm",
) -> list[GateResult]:
    """Judge every gate and fail-if on every config it selects, as one family.

    A gate passes when the data shows its expression, a fail-if fails when the data shows
    its expression; "shown" means the expression's confidence bound clears the threshold.
    With ``correction="holm"`` the bounds are Holm's step-down bounds over every tested
    check, so the chance that any expression is shown although false stays within the
    one-sided error of the run's confidence level. Results come gates first, then
    fail-ifs, each in the given order then config order.

    ``max_errors`` is a count of errored cases per config, or, as a float below 1, a
    fraction of the config's cases. ``min_prompts`` is the fewest prompts an interval
    may rest on (for delta gates: prompts common to the config and the baseline).
    A check that cannot be evaluated fails in both forms.
    """
    if max_errors < 0:
        raise ValueError(f"max_errors must be a count or fraction >= 0, got {max_errors!r}")
    if min_prompts < 0:
        raise ValueError(f"min_prompts must be >= 0, got {min_prompts!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown gate correction {correction!r}; expected one of {', '.join(CORRECTIONS)}")
    entries: list[_Pending | GateResult] = []
    baseline = next((agg for agg in aggregates if agg.is_baseline), None)
    for check in parse_checks(gates, fail_ifs):
        targets = [agg for agg in aggregates if check.gate.selector.matches(agg, delta=check.gate.delta)]
        if not targets:
            entries.append(_no_target(check, aggregates))
        entries += [_prepare(check, agg, baseline, max_errors, min_prompts) for agg in targets]
    pending = [entry for entry in entries if isinstance(entry, _Pending)]
    confidence = aggregates[0].confidence if aggregates else CONFIDENCE
    _judge(pending, one_sided_error(confidence), correction)
    return [entry if isinstance(entry, GateResult) else _result(entry, correction) for entry in entries]


def _no_target(check: Check, aggregates: Sequence[ConfigAggregate]) -> GateResult:
    names = ", ".join(agg.name for agg in aggregates) or "none"
    message = f"{check.label}: selects no config (configs in this run: {names}) -> FAIL"
    return GateResult(check, None, False, None, message)


def _prepare(
    check: Check,
    agg: ConfigAggregate,
    baseline: ConfigAggregate | None,
    max_errors: int | float,
    min_prompts: int,
) -> _Pending:
    gate = check.gate
    reasons: list[str] = []
    involved = [agg]
    replicates: Bootstrap | None = None
    if gate.delta and baseline is None:
        reasons.append("the run has no baseline config to compare with")
    elif gate.delta:
        involved.append(baseline)
        missing = [c.name for c in involved if gate.metric not in c.per_prompt]
        if missing:
            reasons.append(f"{gate.metric} is not available for {', '.join(missing)}")
        else:
            replicates = compare_bootstrap(agg, baseline, gate.metric)
    else:
        replicates = agg.bootstrap(gate.metric)
        if replicates is None:
            reasons.append(f"{gate.metric} is not available for {agg.name}")
    for config in involved:
        reason = _error_budget_reason(config, max_errors)
        if reason:
            reasons.append(reason)
    if replicates is not None and replicates.n_prompts < min_prompts:
        reasons.append(f"only {replicates.n_prompts} prompt(s) evaluated, at least {min_prompts} required")
    elif replicates is not None and replicates.n_prompts == 0:
        reasons.append("no prompt to estimate it from")
    return _Pending(check, agg, replicates, reasons)


def _judge(pending: list[_Pending], family_tail: float, correction: str) -> None:
    """Set each tested check's p-value, tail and whether its expression is shown (Holm's step-down)."""
    tested = [entry for entry in pending if entry.tested]
    for entry in tested:
        gate = entry.check.gate
        entry.p_value = entry.replicates.p_value(gate.threshold, above=gate.bound == "ci_low", strict=gate.op in (">", "<"))
    if correction != "holm":
        for entry in tested:
            entry.family_size, entry.tail = len(tested), family_tail
            entry.shown = entry.check.gate.holds(_decision_interval(entry))
        return

    def clears(index: int, level: float) -> bool:
        return tested[index].check.gate.holds(_bound_interval(tested[index], level))

    for entry, step in zip(tested, holm_steps([entry.p_value for entry in tested], family_tail, clears), strict=True):
        entry.rank, entry.family_size, entry.tail, entry.shown = step.rank, len(tested), step.level, step.rejected
        if step.stopped_at is not None and entry.check.gate.holds(_decision_interval(entry)):
            stop = tested[step.stopped_at]
            entry.stopped_by = f"{stop.check.label} on {stop.config.name}"


def _decision_interval(entry: _Pending) -> Interval:
    return _bound_interval(entry, entry.tail)


def _bound_interval(entry: _Pending, tail: float) -> Interval:
    low, high = entry.replicates.tails(tail)
    return Interval(entry.replicates.estimate, low, high, entry.replicates.n_prompts)


def _format_p(entry: _Pending) -> str:
    """A bootstrap p-value of 0 only says that no resample fell on the other side."""
    resamples = entry.replicates.replicates.size if entry.replicates is not None else 0
    if entry.p_value == 0 and resamples:
        return f"p < {1 / resamples:.2g}"
    return f"p = {entry.p_value:.3g}"


def _result(entry: _Pending, correction: str) -> GateResult:
    check, agg = entry.check, entry.config
    gate = check.gate
    if entry.replicates is None:
        message = f"{agg.name}: {gate.lhs} not evaluated -> FAIL ({'; '.join(entry.reasons)})"
        return GateResult(check, agg.name, False, None, message)
    if not entry.tested:
        observed = entry.replicates.interval(agg.confidence) if entry.replicates.n_prompts else None
        shown_text = "not evaluated"
        passed = False
    else:
        observed = _decision_interval(entry)
        passed = check.form.passed(entry.shown)
        shown_text = "shown" if entry.shown else "not shown"
    verdict = "PASS" if passed else "FAIL"
    parts = [observation(agg.name, gate, observed)]
    detectable = None
    if entry.tested:
        detectable = (observed.ci_high - observed.ci_low) / 2.0
        level = 1.0 - entry.tail
        correction_text = f", Holm {entry.rank} of {entry.family_size}" if correction == "holm" and entry.family_size > 1 else ""
        parts.append(
            f"{check.form.rule}: {gate.bound} {gate.op} {gate.threshold:g} at {level:.2%} one-sided{correction_text}; "
            f"{_format_p(entry)}; detectable ±{detectable:.3f} -> {shown_text}, {verdict}"
        )
    else:
        parts.append(f"{check.form.rule}: {gate.bound} {gate.op} {gate.threshold:g} -> {shown_text}, {verdict}")
    message = "; ".join(parts)
    notes = list(entry.reasons)
    if entry.stopped_by:
        notes.append(f"it clears at its own level, but Holm's step-down stopped earlier, at {entry.stopped_by}")
    if notes:
        message += f" ({'; '.join(notes)})"
    return GateResult(
        check,
        agg.name,
        passed,
        observed,
        message,
        shown=entry.shown if entry.tested else None,
        p_value=entry.p_value if entry.tested else None,
        confidence=1.0 - 2.0 * entry.tail if entry.tested else None,
        detectable=detectable,
    )


def observation(config: str | None, gate: Gate, observed: Interval | None) -> str:
    """``<config>: <lhs> = <interval>``, or ``<config>: <lhs>`` without an interval."""
    if observed is None:
        return f"{config}: {gate.lhs}"
    return f"{config}: {gate.lhs} = {format_interval(observed, signed=gate.delta)}"


def _error_budget_reason(agg: ConfigAggregate, max_errors: int | float) -> str | None:
    if isinstance(max_errors, float) and max_errors < 1:
        allowed = max_errors * agg.n_cases
        budget = f"{max_errors:g} of its cases"
    else:
        allowed = max_errors
        budget = f"{max_errors:g}"
    if agg.n_errors > allowed:
        return f"{agg.name} has {agg.n_errors} errored case(s) of {agg.n_cases}, over the budget of {budget}"
    return None


def format_interval(interval: Interval, *, signed: bool) -> str:
    """``mean [ci_low, ci_high] (n prompts)`` as decision messages print it."""
    spec = "+.3f" if signed else ".3f"
    return f"{interval.mean:{spec}} [{interval.ci_low:{spec}}, {interval.ci_high:{spec}}] ({interval.n_prompts} prompts)"

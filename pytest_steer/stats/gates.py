"""CI gates: small expressions on config aggregates that pass or fail on a CI bound.

Grammar (whitespace is free between tokens)::

    gate      := [selector ":"] lhs op number
    selector  := "alpha=" number | "baseline" | "all" | config-name
    lhs       := metric | metric "-" "baseline"
    op        := ">=" | ">" | "<=" | "<"
    metric    := "strict_prompt_accuracy" | "strict_instruction_accuracy"
               | "loose_prompt_accuracy" | "loose_instruction_accuracy" | "quality"
               | "follow_rate[" instruction-id "]" | "loose_follow_rate[" instruction-id "]"

A config name is made of letters, digits, ``_`` and ``.`` (``alpha10``, ``alpha2.5``);
an instruction id is anything up to the closing bracket (``detectable_format:title``).

Examples::

    strict_prompt_accuracy >= 0.5                     every config, baseline included
    alpha=10: strict_prompt_accuracy - baseline >= 0  steering at alpha 10 must not hurt
    quality - baseline >= -0.5                        every steered config
    baseline: loose_instruction_accuracy > 0.6
    alpha10: follow_rate[detectable_format:title] >= 0.8

Semantics:

* Without a selector (or with ``all``) a gate applies to every config; a delta gate
  (``metric - baseline``) applies to every steered config and cannot select the
  baseline itself. Each selected config gives one result; a selector matching no config
  gives one failing result.
* A gate is decided by a confidence bound, never the point estimate: ``>=`` and ``>``
  hold when ``ci_low`` clears the threshold, ``<=`` and ``<`` when ``ci_high`` does.
* A delta gate bounds the paired per-prompt difference ``config - baseline`` over the
  prompts both evaluated (:func:`pytest_steer.stats.aggregate.compare`).
* A gate refuses to pass when a config involved has more errored cases than the error
  budget, when fewer prompts than the minimum were evaluated, or when the metric is
  missing (e.g. ``quality`` with quality scoring off).

Comparison with a saved run (:func:`compare_runs`) matches configs by name and flags a
regression of a metric when the paired delta ``current - saved`` is surely worse than
its tolerance: ``ci_high < -tolerance``. Noise alone therefore does not fail a build;
a drop larger than the tolerance that the CI cannot explain does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_steer.ifeval import INSTRUCTION_IDS, unknown_instruction_id
from pytest_steer.stats.aggregate import (
    ACCURACY_METRICS,
    FOLLOW_RATE_PREFIXES,
    METRICS,
    ConfigAggregate,
    compare,
    compare_bootstrap,
    follow_rate_name,
    is_metric_name,
)
from pytest_steer.stats.bootstrap import Bootstrap, Interval

COMPARISON_OPS = (">=", ">", "<=", "<")
_METRIC_CHOICES = ", ".join((*METRICS, *(f"{p}[<instruction id>]" for p in FOLLOW_RATE_PREFIXES)))


class GateSyntaxError(ValueError):
    """An invalid gate expression; the message points at the offending position."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        self.text = text
        self.position = position
        self.problem = problem
        super().__init__(f"invalid gate: {problem}\n  {text}\n  {' ' * position}^")


@dataclass(frozen=True)
class Selector:
    """Which configs a gate applies to: ``default``, ``all``, ``name`` or ``alpha``."""

    kind: str
    value: str | float | None = None

    def matches(self, agg: ConfigAggregate, *, delta: bool) -> bool:
        return self.selects(agg.name, agg.alpha, baseline=agg.is_baseline, delta=delta)

    def selects(self, name: str, alpha: float | None, *, baseline: bool, delta: bool) -> bool:
        """Whether the config ``name`` (PASTA at ``alpha``; None for other methods and the baseline) is selected."""
        if delta and baseline:
            return False
        if self.kind == "name":
            return name == self.value
        if self.kind == "alpha":
            return alpha is not None and math.isclose(alpha, float(self.value))
        return True


@dataclass(frozen=True)
class Gate:
    """A parsed gate expression."""

    text: str
    selector: Selector
    metric: str
    delta: bool
    op: str
    threshold: float

    @property
    def lhs(self) -> str:
        return f"{self.metric} - baseline" if self.delta else self.metric

    @property
    def bound(self) -> str:
        """The CI bound that decides the gate."""
        return "ci_low" if self.op in (">=", ">") else "ci_high"

    def holds(self, observed: Interval) -> bool:
        value = observed.ci_low if self.bound == "ci_low" else observed.ci_high
        return {
            ">=": value >= self.threshold,
            ">": value > self.threshold,
            "<=": value <= self.threshold,
            "<": value < self.threshold,
        }[self.op]


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate or fail-if on one config (``config`` is ``None`` when none matched).

    ``observed`` is the interval the decision used: at ``confidence`` (two-sided), which is
    the run's level without correction and wider under Holm's. ``shown`` says whether the
    data showed the expression; ``p_value`` is its one-sided bootstrap p-value and
    ``detectable`` the interval's half-width, about the smallest effect this run could
    show. The last four are ``None`` for a check that could not be evaluated.
    """

    gate: str
    config: str | None
    passed: bool
    observed: Interval | None
    threshold: float
    message: str
    form: str = "gate"
    shown: bool | None = None
    p_value: float | None = None
    confidence: float | None = None
    detectable: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "form": self.form,
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


@dataclass(frozen=True)
class ComparisonResult:
    """Whether one metric of one config regressed against a saved run."""

    config: str
    metric: str
    tolerance: float
    passed: bool
    observed: Interval | None  # paired delta current - saved
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "metric": self.metric,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "observed": None if self.observed is None else self.observed.to_dict(),
            "message": self.message,
        }


# ---------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Token:
    kind: str  # name, number, bracket, op, colon, equals, minus, plus, end
    text: str
    position: int


_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | set("0123456789.")
_DIGITS = set("0123456789")
_PUNCTUATION = {":": "colon", "=": "equals", "-": "minus", "+": "plus"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _NAME_START:
            end = i
            while end < len(text) and text[end] in _NAME_CHARS:
                end += 1
            tokens.append(_Token("name", text[i:end], i))
            i = end
        elif c in _DIGITS or (c == "." and text[i + 1 : i + 2] in _DIGITS):
            end = _scan_number(text, i)
            tokens.append(_Token("number", text[i:end], i))
            i = end
        elif c == "[":
            close = text.find("]", i + 1)
            if close < 0:
                raise GateSyntaxError(text, i, "unclosed '[': expected ']' after the instruction id")
            content = text[i + 1 : close].strip()
            if not content:
                raise GateSyntaxError(text, i + 1, "expected an instruction id inside '[...]'")
            tokens.append(_Token("bracket", content, i))
            i = close + 1
        elif c in "<>":
            op = c + "=" if text[i + 1 : i + 2] == "=" else c
            tokens.append(_Token("op", op, i))
            i += len(op)
        elif c in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[c], c, i))
            i += 1
        else:
            raise GateSyntaxError(text, i, f"unexpected character {c!r}")
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _scan_number(text: str, start: int) -> int:
    """End of the decimal number starting at ``start`` (digits, fraction, exponent)."""
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    if end < len(text) and text[end] == ".":
        end += 1
        while end < len(text) and text[end] in _DIGITS:
            end += 1
    if end < len(text) and text[end] in "eE":
        exponent = end + 1
        if exponent < len(text) and text[exponent] in "+-":
            exponent += 1
        if exponent < len(text) and text[exponent] in _DIGITS:
            end = exponent
            while end < len(text) and text[end] in _DIGITS:
                end += 1
    return end


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, token: _Token, problem: str) -> GateSyntaxError:
        return GateSyntaxError(self.text, token.position, problem)

    def gate(self) -> Gate:
        selector_token = self.peek()
        selector = self.selector()
        metric = self.metric()
        delta = self.baseline_suffix()
        if delta and selector.kind == "name" and selector.value == "baseline":
            raise self.fail(
                selector_token,
                "a delta gate compares steered configs with the baseline; it cannot select 'baseline'",
            )
        op = self.op()
        threshold = self.number()
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "unexpected text after the threshold; a gate ends with its number")
        return Gate(self.text.strip(), selector, metric, delta, op, threshold)

    def selector(self) -> Selector:
        first, second = self.peek(), self.peek(1)
        if first.kind == "name" and first.text == "alpha" and second.kind == "equals":
            self.advance()
            self.advance()
            alpha = self.number()
            self.expect_colon()
            return Selector("alpha", alpha)
        if first.kind == "name" and second.kind == "colon":
            self.advance()
            self.advance()
            return Selector("all") if first.text == "all" else Selector("name", first.text)
        return Selector("default")

    def expect_colon(self) -> None:
        if self.peek().kind != "colon":
            raise self.fail(self.peek(), "expected ':' after the selector")
        self.advance()

    def metric(self) -> str:
        token = self.peek()
        if token.kind != "name":
            raise self.fail(token, f"expected a metric name ({_METRIC_CHOICES})")
        self.advance()
        if token.text in FOLLOW_RATE_PREFIXES:
            bracket = self.peek()
            if bracket.kind != "bracket":
                raise self.fail(bracket, f"expected '[<instruction id>]' after {token.text!r}")
            self.advance()
            if bracket.text not in INSTRUCTION_IDS:
                raise self.fail(bracket, unknown_instruction_id(bracket.text, INSTRUCTION_IDS))
            return follow_rate_name(bracket.text, loose=token.text == "loose_follow_rate")
        if token.text in METRICS:
            return token.text
        if self.peek().kind == "name":
            raise self.fail(self.peek(), f"expected ':' after the selector {token.text!r}")
        raise self.fail(token, f"unknown metric {token.text!r}; expected one of {_METRIC_CHOICES}")

    def baseline_suffix(self) -> bool:
        if self.peek().kind != "minus":
            return False
        self.advance()
        token = self.peek()
        if token.kind != "name" or token.text != "baseline":
            raise self.fail(token, "expected 'baseline' after '-' (a delta gate reads 'metric - baseline')")
        self.advance()
        return True

    def op(self) -> str:
        token = self.peek()
        if token.kind != "op":
            raise self.fail(token, f"expected a comparison operator ({', '.join(COMPARISON_OPS)})")
        self.advance()
        return token.text

    def number(self) -> float:
        sign = 1.0
        if self.peek().kind in ("minus", "plus"):
            sign = -1.0 if self.advance().kind == "minus" else 1.0
        token = self.peek()
        if token.kind != "number":
            raise self.fail(token, "expected a number")
        self.advance()
        return sign * float(token.text)


def parse_gate(text: str) -> Gate:
    """Parse one gate expression; raises :class:`GateSyntaxError` pointing at the error."""
    return _Parser(text).gate()


# ---------------------------------------------------------------------------- evaluation

GATE, FAIL_IF = "gate", "fail_if"
CORRECTIONS = ("holm", "none")


@dataclass
class _Check:
    """One expression on one config while the family is being judged."""

    form: str
    gate: Gate
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
    entries: list[_Check | GateResult] = []
    for form, expressions in ((GATE, gates), (FAIL_IF, fail_ifs)):
        for gate in expressions:
            gate = parse_gate(gate) if isinstance(gate, str) else gate
            targets = [agg for agg in aggregates if gate.selector.matches(agg, delta=gate.delta)]
            if not targets:
                entries.append(_no_target(form, gate, aggregates))
            baseline = next((agg for agg in aggregates if agg.is_baseline), None)
            entries += [_prepare(form, gate, agg, baseline, max_errors, min_prompts) for agg in targets]
    checks = [entry for entry in entries if isinstance(entry, _Check)]
    confidence = aggregates[0].confidence if aggregates else 0.95
    _judge(checks, (1.0 - confidence) / 2.0, correction)
    return [entry if isinstance(entry, GateResult) else _result(entry, correction) for entry in entries]


def _no_target(form: str, gate: Gate, aggregates: Sequence[ConfigAggregate]) -> GateResult:
    names = ", ".join(agg.name for agg in aggregates) or "none"
    label = _label(form, gate)
    message = f"{label}: selects no config (configs in this run: {names}) -> FAIL"
    return GateResult(label, None, False, None, gate.threshold, message, form=form)


def _prepare(
    form: str,
    gate: Gate,
    agg: ConfigAggregate,
    baseline: ConfigAggregate | None,
    max_errors: int | float,
    min_prompts: int,
) -> _Check:
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
    return _Check(form, gate, agg, replicates, reasons)


def _judge(checks: list[_Check], family_tail: float, correction: str) -> None:
    """Set each tested check's p-value, tail and whether its expression is shown (Holm's step-down)."""
    tested = [check for check in checks if check.tested]
    for check in tested:
        gate = check.gate
        check.p_value = check.replicates.p_value(gate.threshold, above=gate.bound == "ci_low", strict=gate.op in (">", "<"))
    ordered = sorted(tested, key=lambda check: check.p_value)  # stable: ties keep the given order
    stopped_by: str | None = None
    for rank, check in enumerate(ordered, start=1):
        check.rank = rank
        check.family_size = len(ordered)
        check.tail = family_tail / (len(ordered) - rank + 1) if correction == "holm" else family_tail
        if stopped_by is not None:
            if check.gate.holds(_decision_interval(check)):
                check.stopped_by = stopped_by
            continue
        check.shown = check.gate.holds(_decision_interval(check))
        if not check.shown and correction == "holm":
            stopped_by = f"{_label(check.form, check.gate)} on {check.config.name}"


def _decision_interval(check: _Check) -> Interval:
    low, high = check.replicates.tails(check.tail)
    return Interval(check.replicates.estimate, low, high, check.replicates.n_prompts)


def _format_p(check: _Check) -> str:
    """A bootstrap p-value of 0 only says that no resample fell on the other side."""
    resamples = check.replicates.replicates.size if check.replicates is not None else 0
    if check.p_value == 0 and resamples:
        return f"p < {1 / resamples:.2g}"
    return f"p = {check.p_value:.3g}"


def _result(check: _Check, correction: str) -> GateResult:
    gate, agg = check.gate, check.config
    label = _label(check.form, gate)
    if check.replicates is None:
        message = f"{agg.name}: {gate.lhs} not evaluated -> FAIL ({'; '.join(check.reasons)})"
        return GateResult(label, agg.name, False, None, gate.threshold, message, form=check.form)
    if not check.tested:
        observed = check.replicates.interval(agg.confidence) if check.replicates.n_prompts else None
        shown_text = "not evaluated"
        passed = False
    else:
        observed = _decision_interval(check)
        passed = check.shown if check.form == GATE else not check.shown
        shown_text = "shown" if check.shown else "not shown"
    verdict = "PASS" if passed else "FAIL"
    rule = "passes if shown" if check.form == GATE else "fails if shown"
    parts = [f"{agg.name}: {gate.lhs} = {_format_interval(observed, signed=gate.delta)}" if observed else f"{agg.name}: {gate.lhs}"]
    detectable = None
    if check.tested:
        detectable = (observed.ci_high - observed.ci_low) / 2.0
        level = 1.0 - check.tail
        correction_text = f", Holm {check.rank} of {check.family_size}" if correction == "holm" and check.family_size > 1 else ""
        parts.append(
            f"{rule}: {gate.bound} {gate.op} {gate.threshold:g} at {level:.2%} one-sided{correction_text}; "
            f"{_format_p(check)}; detectable ±{detectable:.3f} -> {shown_text}, {verdict}"
        )
    else:
        parts.append(f"{rule}: {gate.bound} {gate.op} {gate.threshold:g} -> {shown_text}, {verdict}")
    message = "; ".join(parts)
    notes = list(check.reasons)
    if check.stopped_by:
        notes.append(f"it clears at its own level, but Holm's step-down stopped earlier, at {check.stopped_by}")
    if notes:
        message += f" ({'; '.join(notes)})"
    return GateResult(
        label,
        agg.name,
        passed,
        observed,
        gate.threshold,
        message,
        form=check.form,
        shown=check.shown if check.tested else None,
        p_value=check.p_value if check.tested else None,
        confidence=1.0 - 2.0 * check.tail if check.tested else None,
        detectable=detectable,
    )


def _label(form: str, gate: Gate) -> str:
    """How a check is named in outcomes: the expression, prefixed ``fail if`` for that form."""
    return gate.text if form == GATE else f"fail if {gate.text}"


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


def _format_interval(interval: Interval, *, signed: bool) -> str:
    spec = "+.3f" if signed else ".3f"
    return (
        f"{interval.mean:{spec}} [{interval.ci_low:{spec}}, {interval.ci_high:{spec}}] "
        f"({interval.n_prompts} prompts)"
    )


# ---------------------------------------------------------------------------- saved runs


def compare_runs(
    current: Sequence[ConfigAggregate],
    saved: Sequence[ConfigAggregate],
    metric_thresholds: dict[str, float],
) -> list[ComparisonResult]:
    """Check every current config against the saved config of the same name.

    For each metric with tolerance ``t`` the paired delta ``current - saved`` is taken
    over the prompts both runs evaluated; the check fails (a regression) when
    ``ci_high < -t``, and also when the saved run lacks the config or the metric, or
    shares no prompt with the current one, since then nothing was compared.
    """
    for metric, tolerance in metric_thresholds.items():
        if not is_metric_name(metric):
            raise ValueError(f"unknown metric {metric!r}; expected one of {_METRIC_CHOICES}")
        if not tolerance >= 0:
            raise ValueError(f"tolerance of {metric} must be a number >= 0, got {tolerance!r}")
    saved_by_name = {agg.name: agg for agg in saved}
    results: list[ComparisonResult] = []
    for agg in current:
        old = saved_by_name.get(agg.name)
        for metric, tolerance in metric_thresholds.items():
            results.append(_compare_config(agg, old, metric, tolerance, saved))
    return results


def _compare_config(
    agg: ConfigAggregate,
    old: ConfigAggregate | None,
    metric: str,
    tolerance: float,
    saved: Sequence[ConfigAggregate],
) -> ComparisonResult:
    def failed(reason: str, observed: Interval | None = None) -> ComparisonResult:
        message = f"{agg.name}: {metric} vs saved not compared -> FAIL ({reason})"
        return ComparisonResult(agg.name, metric, tolerance, False, observed, message)

    if old is None:
        names = ", ".join(a.name for a in saved) or "none"
        return failed(f"the saved run has no config {agg.name!r}; it has: {names}")
    missing = [label for label, a in (("current", agg), ("saved", old)) if metric not in a.per_prompt]
    if missing:
        return failed(f"{metric} is missing from the {' and '.join(missing)} run")
    observed = compare(agg, old, metric)
    if observed.n_prompts == 0:
        return failed("no prompt in common between the two runs", observed)
    passed = not observed.ci_high < -tolerance
    # 0.0 - t rather than -t: a tolerance of 0 prints "< 0", not "< -0"
    message = (
        f"{agg.name}: {metric} vs saved = {_format_interval(observed, signed=True)} "
        f"regression if ci_high < {0.0 - tolerance:g} -> {'PASS' if passed else 'FAIL'}"
    )
    return ComparisonResult(agg.name, metric, tolerance, passed, observed, message)


def parse_compare_fail(text: str) -> dict[str, float]:
    """Parse ``"metric:tolerance,..."`` into tolerances per metric.

    A bare number sets the tolerance of the four accuracy metrics; a metric named
    explicitly keeps its own. Example: ``"0.05,quality:0.5"``.
    """
    explicit: dict[str, float] = {}
    bare: float | None = None
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            raise ValueError(f"invalid comparison tolerances {text!r}: empty item; separate items with ','")
        name, colon, value = item.rpartition(":")
        if not colon or "]" in value:
            # No 'metric:' part: a bare number, or a metric whose tolerance is missing.
            tolerance = _parse_tolerance(text, item, item, allow_metric_hint=True)
            if bare is not None:
                raise ValueError(f"invalid comparison tolerances {text!r}: more than one bare tolerance")
            bare = tolerance
            continue
        name = name.strip()
        if not is_metric_name(name):
            raise ValueError(
                f"invalid comparison tolerances {text!r}: unknown metric {name!r}; "
                f"expected one of {_METRIC_CHOICES}"
            )
        if name in explicit:
            raise ValueError(f"invalid comparison tolerances {text!r}: {name} is given twice")
        explicit[name] = _parse_tolerance(text, item, value.strip(), allow_metric_hint=False)
    tolerances = dict.fromkeys(ACCURACY_METRICS, bare) if bare is not None else {}
    tolerances.update(explicit)
    return tolerances


def _parse_tolerance(text: str, item: str, value: str, *, allow_metric_hint: bool) -> float:
    try:
        tolerance = float(value)
    except ValueError:
        hint = (
            f"; give it a tolerance, e.g. '{item}:0.05'"
            if allow_metric_hint and is_metric_name(item)
            else "; expected 'metric:tolerance' or a bare tolerance"
        )
        raise ValueError(
            f"invalid comparison tolerances {text!r}: {value!r} is not a number{hint}"
        ) from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(
            f"invalid comparison tolerances {text!r}: tolerance in {item!r} must be a finite number >= 0"
        )
    return tolerance

"""Comparison with a saved run: has a metric of a config surely regressed?

:func:`compare_runs` matches configs by name and flags a regression of a metric when the
paired delta ``current - saved`` is surely worse than its tolerance: ``ci_high < -tolerance``.
Noise alone therefore does not fail a build; a drop larger than the tolerance that the CI
cannot explain does. :func:`parse_compare_fail` reads the tolerances of
``--steer-compare-fail``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_steer.stats.aggregate import ConfigAggregate, compare
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.gates import format_interval
from pytest_steer.stats.metrics import ACCURACY_METRICS, METRIC_CHOICES, is_metric_name


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
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRIC_CHOICES}")
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
        f"{agg.name}: {metric} vs saved = {format_interval(observed, signed=True)} "
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
            raise ValueError(f"invalid comparison tolerances {text!r}: unknown metric {name!r}; expected one of {METRIC_CHOICES}")
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
        raise ValueError(f"invalid comparison tolerances {text!r}: {value!r} is not a number{hint}") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"invalid comparison tolerances {text!r}: tolerance in {item!r} must be a finite number >= 0")
    return tolerance

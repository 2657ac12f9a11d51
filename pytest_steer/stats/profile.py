"""Head profiling's statistics: each candidate's lift over the baseline, and successive elimination.

A candidate steers some heads alone (every head of one layer, or one head). Its lift is the
paired difference of a following metric from the unsteered baseline over the same prompts,
with a bootstrap interval. Profiling keeps the top ``k`` candidates by lift; after each look
(a block of prompts more), a candidate whose upper bound falls below the ``k``-th best lower
bound is dropped and generates nothing more. The bounds of every look and candidate are taken
at ``error / (looks * candidates)`` per side (Bonferroni over the whole schedule, fixed before
the first look), so a candidate truly among the top ``k`` is dropped with probability at most
``error``, whenever the profiling stops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_steer.stats.aggregate import ConfigAggregate, compare_bootstrap


@dataclass(frozen=True)
class Lift:
    """One candidate's lift over the baseline after a look."""

    config: str
    estimate: float | None
    low: float | None  # at the schedule's per-look error (the elimination bound)
    high: float | None
    prompts: int

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "lift": self.estimate, "ci_low": self.low, "ci_high": self.high, "prompts_used": self.prompts}


def lifts(aggregates: Sequence[ConfigAggregate], candidates: Sequence[str], metric: str, tail: float) -> dict[str, Lift]:
    """Each candidate's lift in ``metric`` over the baseline, with bounds at one-sided ``tail``."""
    baseline = next((agg for agg in aggregates if agg.is_baseline), None)
    by_name = {agg.name: agg for agg in aggregates}
    found: dict[str, Lift] = {}
    for name in candidates:
        agg = by_name.get(name)
        if baseline is None or agg is None or metric not in agg.per_prompt or metric not in baseline.per_prompt:
            found[name] = Lift(name, None, None, None, 0)
            continue
        replicates = compare_bootstrap(agg, baseline, metric)
        if replicates.n_prompts == 0:
            found[name] = Lift(name, None, None, None, 0)
            continue
        low, high = replicates.tails(tail)
        found[name] = Lift(name, replicates.estimate, low, high, replicates.n_prompts)
    return found


def survivors(found: Mapping[str, Lift], live: Sequence[str], k: int) -> list[str]:
    """The ``live`` candidates not shown to be outside the top ``k``: upper bound at or above the k-th best lower bound."""
    if len(live) <= k:
        return list(live)
    lows = sorted((found[name].low for name in live if found[name].low is not None), reverse=True)
    if len(lows) < k:
        return list(live)
    kth = lows[k - 1]
    return [name for name in live if found[name].high is None or found[name].high >= kth]


def ranked(found: Mapping[str, Lift], names: Sequence[str]) -> list[str]:
    """``names`` by estimated lift, best first (ties and undefined lifts last, in the given order)."""
    order = {name: index for index, name in enumerate(names)}
    return sorted(names, key=lambda name: (found[name].estimate is None, -(found[name].estimate or 0.0), order[name]))

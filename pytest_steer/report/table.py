"""The trade-off table every report shows: one row per config, values, deltas and gate verdicts.

The terminal, markdown, HTML and pytest-html renderers lay this table out differently but
read the same rows and format numbers the same way, so every output shows the same figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pytest_steer.report.choice import choice_summary
from pytest_steer.run.records import unsteered_reason
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import not_estimable
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import METRICS, QUALITY_METRIC

METRIC_TITLES = {
    "strict_prompt_accuracy": "strict prompt",
    "strict_instruction_accuracy": "strict instr",
    "loose_prompt_accuracy": "loose prompt",
    "loose_instruction_accuracy": "loose instr",
    "quality": "quality",
}
MISSING = "-"


@dataclass(frozen=True)
class Verdicts:
    """How many gate and saved-run checks on one config passed and failed."""

    passed: int
    failed: int

    @property
    def text(self) -> str:
        total = self.passed + self.failed
        if total == 0:
            return MISSING
        return f"pass {total}/{total}" if not self.failed else f"FAIL {self.failed}/{total}"


@dataclass(frozen=True)
class ConfigRow:
    """One config of the table; ``deltas`` is empty for the baseline."""

    name: str
    alpha: float | None
    n_prompts: int
    n_cases: int
    n_errors: int
    values: dict[str, Interval | None]
    deltas: dict[str, Interval | None]
    verdicts: Verdicts


def config_rows(results: RunResults) -> list[ConfigRow]:
    """Rows in the aggregates' order: baseline first, then by ascending alpha."""
    rows = []
    for agg in results.aggregates:
        deltas = results.deltas.get(agg.name)
        rows.append(
            ConfigRow(
                name=agg.name,
                alpha=agg.alpha,
                n_prompts=agg.n_prompts,
                n_cases=agg.n_cases,
                n_errors=agg.n_errors,
                values={metric: agg.metrics.get(metric) for metric in METRICS},
                deltas={} if deltas is None else {metric: deltas.get(metric) for metric in METRICS},
                verdicts=config_verdicts(results, agg.name),
            )
        )
    return rows


def config_verdicts(results: RunResults, config: str) -> Verdicts:
    outcomes = [g.passed for g in results.gates if g.config == config]
    outcomes += [c.passed for c in results.comparisons if c.config == config]
    return Verdicts(passed=sum(outcomes), failed=len(outcomes) - sum(outcomes))


def shown(interval: Interval | None) -> bool:
    """Whether there is a mean to show: a defined interval, or an estimate without its interval."""
    return interval is not None and (interval.is_defined or not_estimable(interval))


def format_mean(interval: Interval | None, *, signed: bool = False) -> str:
    if interval is None or not shown(interval):
        return MISSING
    return f"{interval.mean:+.3f}" if signed else f"{interval.mean:.3f}"


def format_ci(interval: Interval | None, *, compact: bool = False) -> str:
    """``[low, high]`` at two decimals; ``compact`` drops the space for narrow terminals.

    An estimate over too few prompts for an interval says so instead: ``(n=1, not estimable)``.
    """
    if interval is not None and not_estimable(interval):
        return f"(n={interval.n_prompts}, not estimable)"
    if interval is None or not interval.is_defined:
        return ""
    separator = "," if compact else ", "
    return f"[{interval.ci_low:.2f}{separator}{interval.ci_high:.2f}]"


def format_interval(interval: Interval | None, *, signed: bool = False) -> str:
    if not shown(interval):
        return MISSING
    return f"{format_mean(interval, signed=signed)} {format_ci(interval)}"


def describe_config(name: str, entry: dict[str, Any]) -> str:
    """``pasta_alpha10 (pasta: alpha 10, heads default, include)``; ``baseline (unsteered)``."""
    if entry.get("method") is None:
        return f"{name} (unsteered)"
    params = entry.get("params") or {}
    shown = ", ".join(f"{key} {'default' if value is None else value}" for key, value in params.items())
    return f"{name} ({entry['method']}{': ' + shown if shown else ''})"


def describe_run(results: RunResults) -> list[str]:
    """Short lines on what was evaluated: model, prompts, decoding and steering."""
    run = results.run
    model = run.get("model") or {}
    dataset = run.get("dataset") or {}
    generation = run.get("generation") or {}
    steering = {name: entry for name, entry in (run.get("steering") or {}).items() if isinstance(entry, dict)}
    decoding = (
        "greedy" if generation.get("greedy") else f"sampling (temperature {generation.get('temperature')}, top-p {generation.get('top_p')})"
    )
    lines = [
        f"model: {model.get('name', '?')} ({model.get('dtype', '?')}, {model.get('attn_implementation', '?')} attention)",
        f"prompts: {dataset.get('n_prompts', '?')} from {dataset.get('source', '?')}; "
        f"{generation.get('trials', '?')} trial(s) each, {decoding}, {generation.get('max_new_tokens', '?')} new tokens, "
        f"seed {generation.get('seed', '?')}",
        "configs: " + "; ".join(describe_config(name, entry) for name, entry in steering.items()),
    ]
    if results.selection is not None and results.selection.partial:
        lines.append(results.selection.describe())
    if results.sequential is not None:
        stopped = results.selection.stopped if results.selection is not None else None
        lines.append(describe_sequential(results.sequential, stopped=stopped))
    if results.choice is not None:
        lines.append(choice_summary(results.choice))
    return lines


def describe_sequential(sequential: dict[str, Any], *, stopped: str | None = None) -> str:
    """Where the sequential looks stopped, from results.json's ``sequential`` section; ``stopped``: why the run
    itself ended before its cases ran (then the looks covered only what ran)."""
    looks = sequential.get("looks") or []
    if stopped:
        return (
            f"sequential: {len(looks)} look(s) before the run ended early ({stopped}); "
            "checks on configs it did not run in full are not decided"
        )
    used, total, block = sequential.get("prompts_used", 0), sequential.get("prompts_total", 0), sequential.get("block_size")
    earlier = {config: n for config, n in (sequential.get("prompts_by_config") or {}).items() if n < used}
    configs = "".join(f"; {config} stopped after {n} prompts, its checks decided" for config, n in earlier.items())
    if looks and not looks[-1].get("open") and used < total:
        return (
            f"sequential: every gate and fail-if was decided at look {looks[-1].get('look')} on {used} of {total} prompts "
            f"(blocks of {block}); the cases of the other {total - used} prompts were not run{configs}"
        )
    return (
        f"sequential: {len(looks)} look(s) over all {total} prompts (blocks of {block}); checks still open were decided "
        f"at the budget{configs}"
    )


@dataclass(frozen=True)
class Unsteered:
    """A config's cases that ran as the baseline does, their prompts, and why (reason -> prompts)."""

    n_cases: int = 0
    n_prompts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def unsteered_counts(results: RunResults) -> dict[str, Unsteered] | None:
    """Per config, the cases that ran unsteered (see ``records.unsteered_reason``);
    None when the results carry no case records to count."""
    if not results.records:
        return None
    cases: Counter[str] = Counter()
    reasons: dict[str, dict[str, str]] = {}  # config -> prompt key -> why
    for record in results.records:
        reason = unsteered_reason(record)
        if reason is not None:
            cases[record["config"]] += 1
            reasons.setdefault(record["config"], {})[record["key"]] = reason
    return {
        agg.name: Unsteered(cases[agg.name], len(reasons.get(agg.name, {})), dict(Counter((reasons.get(agg.name) or {}).values())))
        for agg in results.aggregates
    }


def unsteered_lines(results: RunResults) -> list[str]:
    """One line per config with cases that ran unsteered: how many, and why."""
    counts = unsteered_counts(results) or {}
    lines = []
    for agg in results.aggregates:
        left = counts.get(agg.name)
        if left is None or not left.n_cases:
            continue
        why = "; ".join(reason if len(left.reasons) == 1 else f"{n} prompt(s): {reason}" for reason, n in left.reasons.items())
        lines.append(
            f"{agg.name}: {left.n_cases} of {agg.n_cases} case(s) ran unsteered ({left.n_prompts} of {agg.n_prompts} prompt(s)): {why}"
        )
    return lines


DeltaPair = tuple[Interval | None, Interval | None]  # (Δ strict follow rate, Δ quality)


def instruction_delta_rows(results: RunResults) -> tuple[list[str], list[tuple[str, list[DeltaPair]]]]:
    """Steered config names, and per instruction id their (Δ strict follow rate, Δ quality) vs the baseline."""
    deltas = results.instruction_deltas()
    configs = [agg.name for agg in results.aggregates if agg.name in deltas]
    ids = sorted({iid for per_id in deltas.values() for iid in per_id})
    rows = []
    for iid in ids:
        cells = []
        for name in configs:
            entry = deltas[name].get(iid, {})
            cells.append((entry.get("follow_rate"), entry.get(QUALITY_METRIC)))
        rows.append((iid, cells))
    return configs, rows

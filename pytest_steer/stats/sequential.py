"""A run's gates and fail-ifs decided sequentially: their per-prompt streams, the looks, the final verdicts.

Every check of the family gets a betting e-process on its per-prompt values
(:mod:`pytest_steer.stats.eprocess`). After each block of prompts a check is *shown*, *shown
not* or *open*; a gate passes when shown and fails when shown not, a fail-if the other
way round, exactly as when the fixed design decides it. Generation can stop once no
check is open. Checks still open when the prompts run out are decided by the fixed
design (:func:`pytest_steer.stats.gates.evaluate_gates`) at the remaining share of the error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_steer.stats.aggregate import ConfigAggregate, aggregate
from pytest_steer.stats.bootstrap import expanded_tail
from pytest_steer.stats.eprocess import (
    FUTILITY_FACTOR,
    OPEN,
    SEQUENTIAL_SHARE,
    SHOWN,
    Decision,
    Look,
    Stream,
    centered_scores,
    decide_looks,
    prompt_blocks,
    prompts_per_config,
)
from pytest_steer.stats.gate_language import Check, Gate, parse_checks, parse_gate
from pytest_steer.stats.gates import GateResult, evaluate_gates
from pytest_steer.stats.levels import CONFIDENCE, one_sided_error
from pytest_steer.stats.metrics import QUALITY_METRIC

INSTRUCTION_RATIOS = ("strict_instruction_accuracy", "loose_instruction_accuracy")  # per prompt: followed / instructions
DEFAULT_BLOCK_SIZE = 8
DEFAULT_QUALITY_CLIP = 1.0  # nats of fluency (mean log-likelihood per token) around the threshold
FINAL_TAIL_DRAWS = 40  # bootstrap replicates expected beyond the smallest tail decided at the budget
MAX_FINAL_RESAMPLES = 1_000_000


@dataclass(frozen=True)
class SequentialSettings:
    """How prompts are ordered and looked at, and how quality values are bounded."""

    seed: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    quality_clip: float = DEFAULT_QUALITY_CLIP
    share: float = SEQUENTIAL_SHARE


@dataclass(frozen=True)
class SequentialOutcome:
    """Where a sequential run stops and what it decides; ``results`` are in ``evaluate_gates``' order."""

    looks: list[Look]
    prompts_total: int
    prompts_used: list[str]  # in generation order
    results: list[GateResult]
    settings: SequentialSettings
    prompts_by_config: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # configs that stopped on their own

    @property
    def stopped_early(self) -> bool:
        return bool(self.looks) and not self.looks[-1].open and len(self.prompts_used) < self.prompts_total

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts_used": len(self.prompts_used),
            "prompts_by_config": {config: len(keys) for config, keys in sorted(self.prompts_by_config.items())},
            "prompts_total": self.prompts_total,
            "block_size": self.settings.block_size,
            "share": self.settings.share,
            "quality_clip": self.settings.quality_clip,
            "looks": [look.to_dict() for look in self.looks],
        }


def check_name(check: Check, config: str) -> str:
    """A check's name in looks, as its outcome's node id names it: ``<config>::<label>``."""
    return f"{config}::{check.label}"


def check_streams(
    gates: Iterable[Gate | str],
    fail_ifs: Iterable[Gate | str],
    aggregates: Sequence[ConfigAggregate],
    *,
    quality_clip: float = DEFAULT_QUALITY_CLIP,
    max_instructions: int | None = None,
) -> list[Stream]:
    """One stream per check that can be evaluated, over every prompt of ``aggregates``.

    Instruction accuracies are ratios; their scores are scaled by the largest instruction
    count of the run's prompts, known before generation: ``max_instructions`` (every
    prompt the run may generate), by default the largest among ``aggregates``.
    """
    baseline = next((agg for agg in aggregates if agg.is_baseline), None)
    streams: list[Stream] = []
    for check in parse_checks(gates, fail_ifs):
        gate = check.gate
        for agg in aggregates:
            if not gate.selector.matches(agg, delta=gate.delta):
                continue
            values = _paired_values(gate, agg, baseline)
            if values is None:
                continue
            max_den = max((den for a in aggregates for _, den in a.per_prompt.get(gate.metric, {}).values()), default=1.0)
            if max_instructions is not None and gate.metric in INSTRUCTION_RATIOS:
                max_den = float(max(max_instructions, 1))
            bounded = None if gate.metric == QUALITY_METRIC else ((-1.0, 1.0) if gate.delta else (0.0, 1.0))
            scores, low, high, clipped = centered_scores(
                values, gate.threshold, bounded, max_denominator=max_den, quality_clip=quality_clip
            )
            keys = tuple(sorted(scores))
            above = gate.bound == "ci_low"
            configs = (agg.name, baseline.name) if gate.delta and baseline is not None else (agg.name,)
            name = check_name(check, agg.name)
            streams.append(Stream(name, keys, np.array([scores[k] for k in keys]), low, high, above, clipped, configs))
    return streams


def _paired_values(gate: Gate, agg: ConfigAggregate, baseline: ConfigAggregate | None) -> dict[str, tuple[float, float]] | None:
    own = agg.per_prompt.get(gate.metric)
    if not gate.delta:
        return own
    if own is None or baseline is None or gate.metric not in baseline.per_prompt:
        return None
    other = baseline.per_prompt[gate.metric]
    return {key: (own[key][0] - other[key][0], own[key][1]) for key in sorted(own.keys() & other.keys())}


Over = Callable[[set[str], Mapping[str, set[str]]], list[ConfigAggregate]]


def aggregates_over(records: Sequence[Mapping[str, Any]], *, seed: int, confidence: float) -> Over:
    """``(keys, by_config) -> aggregates of the records of those prompts`` (of ``by_config[config]`` for a
    config whose generation stopped earlier): the ``over`` of :func:`decide_sequentially`."""

    def over(keys: set[str], by_config: Mapping[str, set[str]]) -> list[ConfigAggregate]:
        kept = [r for r in records if str(r["key"]) in by_config.get(str(r["config"]), keys)]
        return aggregate(kept, seed=seed, confidence=confidence)

    return over


def replay(
    records: Sequence[Mapping[str, Any]],
    gates: Sequence[Gate | str],
    fail_ifs: Sequence[Gate | str],
    settings: SequentialSettings,
    *,
    max_errors: int | float,
    min_prompts: int,
    correction: str = "holm",
    confidence: float = CONFIDENCE,
) -> tuple[list[ConfigAggregate], SequentialOutcome]:
    """Replay finished cases in the order a sequential run generates them; stop where it would.

    Returns the aggregates over the prompts the sequential run would have generated, and
    its outcome.
    """
    full = aggregate(records, seed=settings.seed, confidence=confidence)
    over = aggregates_over(records, seed=settings.seed, confidence=confidence)
    outcome = decide_sequentially(
        full, over, gates, fail_ifs, settings, max_errors=max_errors, min_prompts=min_prompts, correction=correction
    )
    return over(set(outcome.prompts_used), outcome.prompts_by_config), outcome


def decide_sequentially(
    full: Sequence[ConfigAggregate],
    over: Over,
    gates: Sequence[Gate | str],
    fail_ifs: Sequence[Gate | str],
    settings: SequentialSettings,
    *,
    max_errors: int | float,
    min_prompts: int,
    correction: str = "holm",
    budget: Sequence[str] | None = None,
    max_instructions: int | None = None,
) -> SequentialOutcome:
    """Look after each block of the budget's prompts until no check is open, then give every check its verdict.

    ``full`` aggregates every prompt generated; ``over(keys, by_config)`` aggregates the same
    cases restricted to the prompts ``keys`` (``by_config[config]`` for a config that stopped
    earlier). ``budget`` holds every prompt the run may generate
    (default: those of ``full``), and ``max_instructions`` the largest instruction count among
    them (default: among ``full``'s); they come in :func:`pytest_steer.stats.eprocess.prompt_blocks`
    order, and a prompt's values are complete once its block is, since every config of a
    prompt is in the same block.
    """
    gates = [parse_gate(g) if isinstance(g, str) else g for g in gates]
    fail_ifs = [parse_gate(g) if isinstance(g, str) else g for g in fail_ifs]
    generated = {key for agg in full for values in agg.per_prompt.values() for key in values}
    keys = sorted(generated if budget is None else set(budget))
    confidence = full[0].confidence if full else CONFIDENCE
    streams = check_streams(gates, fail_ifs, full, quality_clip=settings.quality_clip, max_instructions=max_instructions)
    blocks = prompt_blocks(keys, settings.block_size, settings.seed)
    alpha = one_sided_error(confidence)
    looks = decide_looks(streams, blocks, alpha, min_prompts=min_prompts, share=settings.share, correction=correction)
    order = [key for block in blocks for key in block]
    used = order[: looks[-1].prompts_used] if looks else order
    by_config = {config: set(order[:n]) for config, n in prompts_per_config(looks).items()}
    final_confidence = 1.0 - (1.0 - settings.share) * (1.0 - confidence)  # the budget's share of the error
    final = over(set(used), by_config)
    if not looks or looks[-1].open:
        smallest_tail = (1.0 - settings.share) * alpha / (len(streams) if correction == "holm" else 1)
        least = final_resamples(smallest_tail, len(used))
        final = [dataclasses.replace(agg, n_resamples=max(agg.n_resamples, least)) for agg in final]
    resamples = {agg.name: agg.n_resamples for agg in final}
    fixed = evaluate_gates(
        gates,
        [dataclasses.replace(agg, confidence=final_confidence) for agg in final],
        fail_ifs=fail_ifs,
        correction=correction,
        max_errors=max_errors,
        min_prompts=min_prompts,
    )
    decisions = {d.name: d for d in looks[-1].decisions} if looks else {}
    by_name = {s.name: s for s in streams}
    results = [_combine(result, decisions, by_name, len(blocks), alpha, settings.share, resamples) for result in fixed]
    return SequentialOutcome(looks, len(keys), used, results, settings, by_config)


def final_resamples(tail: float, n_prompts: int) -> int:
    """Resamples that put about ``FINAL_TAIL_DRAWS`` beyond the smallest tail the budget's decision reads.

    That tail is the family's error at the budget over Holm's family size, expanded for
    ``n_prompts`` (:func:`pytest_steer.stats.bootstrap.expanded_tail`): with the run's 2,000 resamples
    a handful of replicates decides there, and their chance count makes the decision
    anti-conservative. Capped at ``MAX_FINAL_RESAMPLES``.
    """
    if n_prompts < 2:
        return 0
    expanded = expanded_tail(tail, n_prompts)
    if expanded * MAX_FINAL_RESAMPLES <= FINAL_TAIL_DRAWS:
        return MAX_FINAL_RESAMPLES
    return math.ceil(FINAL_TAIL_DRAWS / expanded)


def _combine(
    result: GateResult,
    decisions: dict[str, Decision],
    streams: dict[str, Stream],
    n_looks: int,
    alpha: float,
    share: float,
    resamples: dict[str, int],
) -> GateResult:
    name = check_name(result.check, result.config) if result.config is not None else None
    decision = decisions.get(name) if name is not None else None
    if result.shown is None or decision is None:
        return result  # not evaluated: it fails in both forms, as in a fixed run
    stream = streams[name]
    clip_note = f"; {stream.n_clipped} prompt value(s) clipped to the quality range" if stream.n_clipped else ""
    if decision.state == OPEN:
        note = (
            f" (open after {n_looks} looks; decided at the budget on its share of the error, "
            f"{resamples[result.config]:,} resamples{clip_note})"
        )
        return dataclasses.replace(result, message=result.message + note)
    shown = decision.state == SHOWN
    passed = result.form.passed(shown)
    p_value = decision.p_shown if shown else decision.p_shown_not
    bound = "lower" if stream.above == shown else "upper"
    futility = alpha * FUTILITY_FACTOR
    bar = f"Holm over the family at one-sided {alpha * share:g}" if shown else f"futility, this check alone at one-sided {futility:g}"
    message = (
        f"{result.observation()}; {result.form.rule}: "
        f"{decision.state} at look {decision.look} of {n_looks} ({decision.prompts} prompts) on the {bound} bound, "
        f"e-value {1.0 / max(p_value, 1e-300):.3g} ({bar}){clip_note} -> {decision.state}, {'PASS' if passed else 'FAIL'}"
    )
    return dataclasses.replace(result, passed=passed, shown=shown, p_value=p_value, message=message)

"""Case records to per-config aggregates: accuracies, quality and their CIs over prompts.

Records arrive in their dict form (``CaseRecord.to_dict()``) or as any object with the
same attributes. Per config, errored cases are counted and otherwise ignored; the
remaining trials of each prompt are averaged first, so every prompt weighs the same
whatever its number of trials, and the bootstrap then resamples prompts.

Per prompt ``p`` (mean over its valid trials):

* ``strict_prompt_accuracy``: follow-all rate; numerator the rate, denominator 1.
* ``strict_instruction_accuracy``: numerator the mean number of instructions followed,
  denominator the prompt's number of instructions (a micro ratio over instructions).
* ``loose_*``: the same on the loose verdicts.
* ``quality``: mean of the non-missing quality scores; prompts without any are left out,
  and the metric is absent when no prompt has one.
* ``follow_rate[X]`` / ``loose_follow_rate[X]``: over the prompts holding instruction
  ``X``, the fraction of their ``X`` instructions followed, averaged over prompts.

Every per-prompt ``(numerator, denominator)`` pair is kept so that two configs can be
compared paired per prompt (:func:`compare`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_steer.stats.bootstrap import Bootstrap, Interval, bootstrap, paired_bootstrap
from pytest_steer.stats.levels import CONFIDENCE
from pytest_steer.stats.metrics import METRICS, QUALITY_METRIC, follow_rate_name, split_follow_rate

_RECORD_FIELDS = (
    "key",
    "config",
    "alpha",
    "trial",
    "instruction_id_list",
    "strict",
    "loose",
    "follow_all_strict",
    "follow_all_loose",
    "quality",
    "error",
)

PerPrompt = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class ConfigAggregate:
    """Aggregates of one steering config, with the settings its intervals were drawn with."""

    name: str
    alpha: float | None
    n_prompts: int
    n_cases: int  # every case of the config, errored ones included
    n_errors: int
    metrics: dict[str, Interval]
    per_instruction: dict[str, dict[str, Interval]]  # id -> {"strict": ..., "loose": ...}
    per_prompt: dict[str, PerPrompt]  # metric -> prompt key -> (numerator, denominator)
    method: str | None = None  # the steering method; None for the unsteered baseline
    confidence: float = CONFIDENCE
    n_resamples: int = 2000
    seed: int = 0

    @property
    def is_baseline(self) -> bool:
        """The unsteered config, the one steered configs are compared with."""
        return self.method is None and self.alpha is None

    def interval(self, metric: str) -> Interval | None:
        """The interval of a metric or follow-rate name; ``None`` when this config lacks it."""
        if metric in self.metrics:
            return self.metrics[metric]
        follow_rate = split_follow_rate(metric)
        if follow_rate is None:
            return None
        side, instruction_id = follow_rate
        return self.per_instruction.get(instruction_id, {}).get(side)

    def bootstrap(self, metric: str) -> Bootstrap | None:
        """The replicates behind a metric's interval; ``None`` when this config lacks it."""
        values = self.per_prompt.get(metric)
        if values is None:
            return None
        keys = sorted(values)
        return bootstrap([values[k][0] for k in keys], [values[k][1] for k in keys], n_resamples=self.n_resamples, seed=self.seed)

    def to_dict(self, *, include_per_prompt: bool = False) -> dict[str, Any]:
        """JSON-ready form; ``include_per_prompt`` keeps what a later paired comparison needs."""
        data: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "alpha": self.alpha,
            "n_prompts": self.n_prompts,
            "n_cases": self.n_cases,
            "n_errors": self.n_errors,
            "confidence": self.confidence,
            "metrics": {m: iv.to_dict() for m, iv in self.metrics.items()},
            "per_instruction": {iid: {side: iv.to_dict() for side, iv in sides.items()} for iid, sides in self.per_instruction.items()},
        }
        if include_per_prompt:
            data["per_prompt"] = {m: {key: [num, den] for key, (num, den) in values.items()} for m, values in self.per_prompt.items()}
            data["n_resamples"] = self.n_resamples
            data["seed"] = self.seed
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfigAggregate:
        """Inverse of ``to_dict(include_per_prompt=True)``, e.g. for a saved baseline run."""
        if "per_prompt" not in data:
            raise ValueError(
                f"saved aggregate of config {data.get('name')!r} has no per-prompt values; "
                "save it with to_dict(include_per_prompt=True) to compare runs paired per prompt"
            )
        alpha = data["alpha"]
        return cls(
            name=str(data["name"]),
            alpha=None if alpha is None else float(alpha),
            method=data.get("method", None if alpha is None else "pasta"),
            n_prompts=int(data["n_prompts"]),
            n_cases=int(data["n_cases"]),
            n_errors=int(data["n_errors"]),
            metrics={m: Interval.from_dict(iv) for m, iv in data["metrics"].items()},
            per_instruction={
                iid: {side: Interval.from_dict(iv) for side, iv in sides.items()} for iid, sides in data["per_instruction"].items()
            },
            per_prompt={
                m: {key: (float(num), float(den)) for key, (num, den) in values.items()} for m, values in data["per_prompt"].items()
            },
            confidence=float(data.get("confidence", CONFIDENCE)),
            n_resamples=int(data.get("n_resamples", 2000)),
            seed=int(data.get("seed", 0)),
        )


def aggregate(
    records: Iterable[Mapping[str, Any] | Any],
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
) -> list[ConfigAggregate]:
    """Aggregate case records per config, baseline first, then PASTA by ascending alpha, then other methods."""
    by_config: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        fields = _record_fields(record)
        by_config[str(fields["config"])].append(fields)
    aggregates = [_aggregate_config(name, config_records, seed, confidence, n_resamples) for name, config_records in by_config.items()]
    return sorted(aggregates, key=config_order)


def config_order(agg: ConfigAggregate) -> tuple[bool, bool, float, str]:
    """Sort key: baseline first, then PASTA by ascending alpha, then the other methods by name."""
    return (agg.method is not None, agg.method != "pasta", agg.alpha if agg.alpha is not None else 0.0, agg.name)


def compare(a: ConfigAggregate, b: ConfigAggregate, metric: str) -> Interval:
    """Paired difference ``a - b`` of a metric over the prompts both configs evaluated.

    Uses ``a``'s bootstrap settings. Raises ``KeyError`` when either config lacks the
    metric; no common prompt gives an undefined interval with ``n_prompts == 0``.
    """
    return compare_bootstrap(a, b, metric).interval(a.confidence)


def compare_bootstrap(a: ConfigAggregate, b: ConfigAggregate, metric: str, prompts: Iterable[str] | None = None) -> Bootstrap:
    """The replicates behind :func:`compare`; ``prompts`` narrows the common prompts further."""
    for agg in (a, b):
        if metric not in agg.per_prompt:
            raise KeyError(f"config {agg.name!r} has no metric {metric!r}")
    values_a, values_b = a.per_prompt[metric], b.per_prompt[metric]
    common = values_a.keys() & values_b.keys()
    keys = sorted(common if prompts is None else common & set(prompts))
    return paired_bootstrap(
        [values_a[k][0] for k in keys],
        [values_a[k][1] for k in keys],
        [values_b[k][0] for k in keys],
        [values_b[k][1] for k in keys],
        n_resamples=a.n_resamples,
        seed=a.seed,
    )


def deltas_vs_baseline(aggregates: Iterable[ConfigAggregate]) -> dict[str, dict[str, Interval]]:
    """For every steered config, the paired delta vs the baseline of each metric both have.

    Empty when the run has no baseline config.
    """
    aggregates = list(aggregates)
    baseline = next((agg for agg in aggregates if agg.is_baseline), None)
    if baseline is None:
        return {}
    return {
        agg.name: {
            metric: compare(agg, baseline, metric) for metric in METRICS if metric in agg.per_prompt and metric in baseline.per_prompt
        }
        for agg in aggregates
        if agg is not baseline
    }


MIN_INTERVAL_PROMPTS = 2  # the interval over one prompt is that prompt's value, zero wide: no interval at all


def is_estimable(interval: Interval, min_prompts: int) -> bool:
    """Whether an interval rests on at least ``min_prompts`` prompts, and never fewer than two."""
    return interval.is_defined and interval.n_prompts >= max(min_prompts, MIN_INTERVAL_PROMPTS)


def not_estimable(interval: Interval) -> bool:
    """An estimate kept without its interval (:func:`instruction_deltas_vs_baseline`): a mean, no bounds."""
    return not math.isnan(interval.mean) and (math.isnan(interval.ci_low) or math.isnan(interval.ci_high))


def instruction_deltas_vs_baseline(aggregates: Iterable[ConfigAggregate], *, min_prompts: int) -> dict[str, dict[str, dict[str, Interval]]]:
    """Steered config -> instruction id -> paired delta vs the baseline, per prompt holding the id.

    ``follow_rate`` and ``loose_follow_rate`` are the deltas of that id's follow rates;
    ``quality`` is the delta of quality over the prompts holding the id (absent without
    quality scores). A delta over fewer prompts than ``min_prompts`` (or one prompt) keeps
    its mean and prompt count but has no interval: its bounds are NaN (:func:`not_estimable`).
    Empty when the run has no baseline config.
    """
    aggregates = list(aggregates)
    baseline = next((agg for agg in aggregates if agg.is_baseline), None)
    if baseline is None:
        return {}
    deltas: dict[str, dict[str, dict[str, Interval]]] = {}
    for agg in aggregates:
        if agg is baseline:
            continue
        per_id: dict[str, dict[str, Interval]] = {}
        for iid in sorted(agg.per_instruction.keys() & baseline.per_instruction.keys()):
            strict = follow_rate_name(iid)
            entry = {
                "follow_rate": compare(agg, baseline, strict),
                "loose_follow_rate": compare(agg, baseline, follow_rate_name(iid, loose=True)),
            }
            if QUALITY_METRIC in agg.per_prompt and QUALITY_METRIC in baseline.per_prompt:
                holding = agg.per_prompt[strict].keys() & baseline.per_prompt[strict].keys()
                paired = compare_bootstrap(agg, baseline, QUALITY_METRIC, holding)
                entry[QUALITY_METRIC] = paired.interval(agg.confidence)
            per_id[iid] = {
                key: iv if is_estimable(iv, min_prompts) else Interval(iv.mean, math.nan, math.nan, iv.n_prompts)
                for key, iv in entry.items()
            }
        deltas[agg.name] = per_id
    return deltas


def instruction_quality(agg: ConfigAggregate, instruction_id: str) -> Interval | None:
    """Mean quality over the prompts of ``agg`` that hold ``instruction_id``; ``None`` without quality."""
    quality = agg.per_prompt.get(QUALITY_METRIC)
    holding = agg.per_prompt.get(follow_rate_name(instruction_id))
    if quality is None or holding is None:
        return None
    keys = sorted(quality.keys() & holding.keys())
    replicates = bootstrap([quality[k][0] for k in keys], n_resamples=agg.n_resamples, seed=agg.seed)
    return replicates.interval(agg.confidence)


def _record_fields(record: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(record, Mapping):
        missing = [name for name in _RECORD_FIELDS if name not in record]
        if missing:
            raise ValueError(f"case record lacks field(s) {', '.join(missing)}: {dict(record)!r}")
        fields = {name: record[name] for name in _RECORD_FIELDS}
        method = record.get("method", _UNNAMED)
    else:
        missing = [name for name in _RECORD_FIELDS if not hasattr(record, name)]
        if missing:
            raise ValueError(f"case record {record!r} lacks attribute(s) {', '.join(missing)}")
        fields = {name: getattr(record, name) for name in _RECORD_FIELDS}
        method = getattr(record, "method", _UNNAMED)
    # Records written before methods were named carry only an alpha: PASTA's.
    fields["method"] = method if method is not _UNNAMED else None if fields["alpha"] is None else "pasta"
    return fields


_UNNAMED = object()


@dataclass(frozen=True)
class _Trial:
    follow_all: dict[str, bool]  # "strict" / "loose" -> every instruction followed
    verdicts: dict[str, list[bool]]  # "strict" / "loose" -> one verdict per instruction
    quality: float | None


@dataclass
class _PromptTrials:
    """Valid trials of one prompt under one config, by trial number."""

    instruction_ids: list[str]
    trials: dict[int, _Trial] = field(default_factory=dict)

    def ordered(self) -> list[_Trial]:
        # Averaging in trial order keeps float sums independent of record arrival order.
        return [self.trials[t] for t in sorted(self.trials)]


def _aggregate_config(
    name: str,
    records: list[Mapping[str, Any]],
    seed: int,
    confidence: float,
    n_resamples: int,
) -> ConfigAggregate:
    alpha = _config_alpha(name, records)
    method = _config_method(name, records)
    prompts: dict[str, _PromptTrials] = {}
    n_errors = 0
    for record in records:
        if record["error"] is not None:
            n_errors += 1
            continue
        _add_trial(prompts, name, record)

    per_prompt = _per_prompt_values(prompts)

    def interval(values: PerPrompt) -> Interval:
        keys = sorted(values)
        replicates = bootstrap([values[k][0] for k in keys], [values[k][1] for k in keys], n_resamples=n_resamples, seed=seed)
        return replicates.interval(confidence)

    metrics = {m: interval(per_prompt[m]) for m in METRICS if m in per_prompt}
    instruction_ids = sorted({iid for p in prompts.values() for iid in p.instruction_ids})
    per_instruction = {
        iid: {side: interval(per_prompt[follow_rate_name(iid, loose=side == "loose")]) for side in ("strict", "loose")}
        for iid in instruction_ids
    }
    return ConfigAggregate(
        name=name,
        alpha=alpha,
        method=method,
        n_prompts=len(prompts),
        n_cases=len(records),
        n_errors=n_errors,
        metrics=metrics,
        per_instruction=per_instruction,
        per_prompt=per_prompt,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )


def _config_alpha(name: str, records: list[Mapping[str, Any]]) -> float | None:
    alphas = {None if r["alpha"] is None else float(r["alpha"]) for r in records}
    if len(alphas) != 1:
        raise ValueError(f"config {name!r} has records with different alphas {sorted(alphas, key=str)}")
    return alphas.pop()


def _config_method(name: str, records: list[Mapping[str, Any]]) -> str | None:
    methods = {r["method"] for r in records}
    if len(methods) != 1:
        raise ValueError(f"config {name!r} has records of different methods {sorted(methods, key=str)}")
    return methods.pop()


def _add_trial(prompts: dict[str, _PromptTrials], config: str, record: Mapping[str, Any]) -> None:
    key = str(record["key"])
    where = f"case key={key!r} config={config!r} trial={record['trial']!r}"
    ids = list(record["instruction_id_list"])
    if not ids:
        raise ValueError(f"{where} has no instruction; every prompt needs at least one")
    if len(record["strict"]) != len(ids) or len(record["loose"]) != len(ids):
        raise ValueError(
            f"{where} has {len(record['strict'])} strict and {len(record['loose'])} loose verdicts "
            f"for {len(ids)} instructions; verdicts must be one per instruction"
        )
    prompt = prompts.setdefault(key, _PromptTrials(instruction_ids=ids))
    if prompt.instruction_ids != ids:
        raise ValueError(f"{where} lists instructions {ids} but other trials list {prompt.instruction_ids}")
    trial = record["trial"]
    if trial in prompt.trials:
        raise ValueError(f"{where} appears twice; each case must be recorded once")
    quality = record["quality"]
    prompt.trials[trial] = _Trial(
        follow_all={side: bool(record[f"follow_all_{side}"]) for side in ("strict", "loose")},
        verdicts={side: [bool(v) for v in record[side]] for side in ("strict", "loose")},
        quality=None if quality is None or math.isnan(float(quality)) else float(quality),
    )


def _per_prompt_values(prompts: dict[str, _PromptTrials]) -> dict[str, PerPrompt]:
    """Metric -> prompt key -> (numerator, denominator), trials averaged per prompt."""
    values: dict[str, PerPrompt] = defaultdict(dict)
    for key in sorted(prompts):
        prompt = prompts[key]
        trials = prompt.ordered()
        n_instructions = len(prompt.instruction_ids)
        for side in ("strict", "loose"):
            follow_all = [float(trial.follow_all[side]) for trial in trials]
            verdicts = [trial.verdicts[side] for trial in trials]
            values[f"{side}_prompt_accuracy"][key] = (sum(follow_all) / len(trials), 1.0)
            followed = sum(sum(v) for v in verdicts) / len(trials)
            values[f"{side}_instruction_accuracy"][key] = (followed, float(n_instructions))
            for iid in sorted(set(prompt.instruction_ids)):
                positions = [i for i, x in enumerate(prompt.instruction_ids) if x == iid]
                rate = sum(sum(v[i] for i in positions) / len(positions) for v in verdicts) / len(trials)
                values[follow_rate_name(iid, loose=side == "loose")][key] = (rate, 1.0)
        scores = [trial.quality for trial in trials if trial.quality is not None]
        if scores:
            values[QUALITY_METRIC][key] = (sum(scores) / len(scores), 1.0)
    return dict(values)

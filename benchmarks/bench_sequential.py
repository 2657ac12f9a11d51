"""Sequential gates against the fixed design, by simulation, through the project's own decision code.

The bench_gates scenario: each prompt has its own follow probability ``p ~ Beta(2, 2)``;
each of two instructions is followed with probability ``sqrt(q)`` per trial (``q = p``
unless steering changes it), so strict prompt accuracy has mean ``E[q]``. One baseline,
6 steered configs, fail-ifs on 2 metrics each (12 checks), one-sided family error 0.025
under Holm, looks every 8 prompts, sequential share 0.2 of the error. Scenarios:

* A/A: steering changes nothing; fail-ifs ``<metric> - baseline < 0``.
* A/A, tolerance 0.25: the same with fail-ifs ``< -0.25`` (shown not once the drop is
  shown to be smaller than 0.25, so the run can stop).
* drop 0.25: alpha 10 halves ``q`` (a drop of 0.25 in strict prompt accuracy); fail-ifs ``< 0``.
* drop 0.5, tolerance 0.25: alpha 10 follows nothing (a drop of 0.5); fail-ifs ``< -0.25``.
* quality A/A, left-skewed: fail-ifs on strict prompt accuracy and on quality (``< 0``)
  for each config; a prompt's quality is its own level plus, per trial, left-skewed
  log-likelihood-like noise ``0.3 (e^(1/2) - L)``, ``L`` lognormal(0, 1): mostly a little
  above the level, sometimes far below. Quality is clipped at the default ±1 nat.
* quality skewed shift (a stress test of the null, beyond A/A): the same, and steering
  moves each prompt's quality by a mean-zero, left-skewed ``0.5 (e^(1/2) - L)``, so the
  paired differences themselves are left-skewed with mean 0.

For each row: the rate of any false alarm (A/A) or the power of the alpha 10 fail-if
(drop), sequential (and the part of it decided at the looks, the rest at the budget),
fixed, and fixed on precise tails (as many resamples as it takes to put
``FINAL_TAIL_DRAWS`` beyond Holm's first step, as the sequential run's budget does: the
fixed design's own rates without the Monte-Carlo noise of its 2,000 resamples), and the
mean share of the fixed design's generations the sequential run used (a config whose
checks are all decided stops before the run does, so each config counts with its own
prompts), each with its Monte-Carlo standard error.

Then the rate of anything shown at the looks alone, without the budget's bootstrap, over
more simulations (their share of the error is 0.005).

Usage: python benchmarks/bench_sequential.py [--sims 100] [--resamples 2000] [--looks-sims 1000] [--only SCENARIO]
Runs use 2,000 bootstrap resamples by default (``--resamples``: the fixed design's and
the sequential run's before the budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import time

import numpy as np

from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.stats.eprocess import SEQUENTIAL_SHARE, SHOWN, decide_looks, prompt_blocks
from pytest_steer.stats.gates import evaluate_gates
from pytest_steer.stats.sequential import (
    SequentialOutcome,
    SequentialSettings,
    check_streams,
    decide_sequentially,
    final_resamples,
)

ALPHAS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0)
TARGET = 10.0


def simulate(rng: np.random.Generator, n: int, trials: int, scenario: str, resamples: int) -> list[ConfigAggregate]:
    """Per-prompt values of every config, as the run's aggregation would compute them."""
    keys = [f"{i:04d}" for i in range(n)]
    p = rng.beta(2.0, 2.0, size=n)
    level = rng.normal(-2.0, 0.3, size=n)  # a prompt's fluency, nats per token
    configs = []
    for alpha in (None, *ALPHAS):
        q = p
        if alpha == TARGET and scenario == "drop 0.25":
            q = p / 2.0
        elif alpha == TARGET and scenario.startswith("drop 0.5"):
            q = np.zeros(n)
        follows = rng.random((n, trials, 2)) < np.sqrt(q)[:, None, None]
        prompt_acc = follows.all(axis=2).mean(axis=1)
        followed = follows.sum(axis=2).mean(axis=1)
        per_prompt = {
            "strict_prompt_accuracy": {k: (float(v), 1.0) for k, v in zip(keys, prompt_acc, strict=True)},
            "strict_instruction_accuracy": {k: (float(v), 2.0) for k, v in zip(keys, followed, strict=True)},
        }
        if scenario.startswith("quality"):
            # Left-skewed per-trial noise of mean 0: mostly a little above the level, sometimes far below.
            noise = 0.3 * (math.exp(0.5) - rng.lognormal(0.0, 1.0, size=(n, trials)))
            shift = 0.5 * (math.exp(0.5) - rng.lognormal(0.0, 1.0, size=n)) if alpha is not None and "shift" in scenario else 0.0
            quality = level + shift + noise.mean(axis=1)
            per_prompt["quality"] = {k: (float(v), 1.0) for k, v in zip(keys, quality, strict=True)}
        name = "baseline" if alpha is None else f"alpha{alpha:g}"
        configs.append(
            ConfigAggregate(
                name, alpha, n, n * trials, 0, {}, {}, per_prompt, method=None if alpha is None else "pasta", n_resamples=resamples
            )
        )
    return configs


def restrict(aggregates: list[ConfigAggregate], keys: set[str], by_config: dict[str, set[str]]) -> list[ConfigAggregate]:
    out = []
    for agg in aggregates:
        kept = by_config.get(agg.name, keys)
        per_prompt = {m: {k: v for k, v in values.items() if k in kept} for m, values in agg.per_prompt.items()}
        trials = agg.n_cases // agg.n_prompts
        out.append(
            ConfigAggregate(
                agg.name, agg.alpha, len(kept), len(kept) * trials, 0, {}, {}, per_prompt, agg.method, n_resamples=agg.n_resamples
            )
        )
    return out


def generated_share(outcome: SequentialOutcome, configs: list[ConfigAggregate], n: int) -> float:
    """The sequential run's generations over the fixed design's: each config with its own prompts."""
    used = len(outcome.prompts_used)
    return sum(len(outcome.prompts_by_config.get(agg.name, range(used))) for agg in configs) / (n * len(configs))


def fail_ifs(scenario: str) -> list[str]:
    tolerance = "-0.25" if "tolerance" in scenario else "0"
    metrics = (
        ("strict_prompt_accuracy", "quality")
        if scenario.startswith("quality")
        else ("strict_prompt_accuracy", "strict_instruction_accuracy")
    )
    return [f"{m} - baseline < {tolerance}" for m in metrics]


def row(sims: int, resamples: int, n: int, trials: int, scenario: str) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng([n, trials, sum(map(ord, scenario))])
    checks = fail_ifs(scenario)
    target = f"fail if {checks[0]}"
    seq_hits, look_hits, fixed_hits, precise_hits, used = [], [], [], [], []
    precise = final_resamples(0.025 / (len(checks) * len(ALPHAS)), n)  # Holm's first step over the 12 checks
    for sim in range(sims):
        full = simulate(rng, n, trials, scenario, resamples)
        settings = SequentialSettings(seed=sim)
        outcome = decide_sequentially(full, functools.partial(restrict, full), [], checks, settings, max_errors=0, min_prompts=10)
        fixed = evaluate_gates([], full, fail_ifs=checks, max_errors=0, min_prompts=10)
        on_precise_tails = [dataclasses.replace(agg, n_resamples=max(resamples, precise)) for agg in full]
        fixed_precise = evaluate_gates([], on_precise_tails, fail_ifs=checks, max_errors=0, min_prompts=10)
        at_looks = [d for d in outcome.looks[-1].decisions if d.state == SHOWN]
        if scenario.startswith("drop"):
            look_hits.append(any(d.name == f"alpha10::{target}" for d in at_looks))
            seq_hits.append(any(r.config == "alpha10" and r.gate == target and not r.passed for r in outcome.results))
            fixed_hits.append(any(r.config == "alpha10" and r.gate == target and not r.passed for r in fixed))
            precise_hits.append(any(r.config == "alpha10" and r.gate == target and not r.passed for r in fixed_precise))
        else:
            look_hits.append(bool(at_looks))
            seq_hits.append(any(not r.passed for r in outcome.results))
            fixed_hits.append(any(not r.passed for r in fixed))
            precise_hits.append(any(not r.passed for r in fixed_precise))
        used.append(generated_share(outcome, full, n))
    measured = (("seq", seq_hits), ("looks", look_hits), ("fixed", fixed_hits), ("precise", precise_hits), ("used", used))
    return {name: _mean_se(values) for name, values in measured}


def looks_only(sims: int, n: int, trials: int, scenario: str) -> tuple[float, float]:
    """The rate of anything shown at the looks alone (no bootstrap), cheap enough for many simulations."""
    rng = np.random.default_rng([n, trials, sum(map(ord, scenario)), 1])
    checks = fail_ifs(scenario)
    alarms = []
    for sim in range(sims):
        full = simulate(rng, n, trials, scenario, resamples=1)
        streams = check_streams([], checks, full)
        blocks = prompt_blocks([f"{i:04d}" for i in range(n)], 8, seed=sim)
        looks = decide_looks(streams, blocks, 0.025, min_prompts=10)
        alarms.append(any(d.state == SHOWN for d in looks[-1].decisions))
    return _mean_se(alarms)


def _mean_se(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(array.size))


ROWS = (
    ("A/A", 48, 1),
    ("A/A", 48, 2),
    ("A/A", 200, 1),
    ("A/A", 200, 2),
    ("A/A, tolerance 0.25", 48, 2),
    ("A/A, tolerance 0.25", 200, 1),
    ("A/A, tolerance 0.25", 200, 2),
    ("drop 0.25", 48, 1),
    ("drop 0.25", 48, 2),
    ("drop 0.5, tolerance 0.25", 200, 1),
    ("drop 0.5, tolerance 0.25", 200, 2),
    ("quality A/A, left-skewed", 48, 2),
    ("quality A/A, left-skewed", 200, 2),
    ("quality skewed shift", 48, 2),
    ("quality skewed shift", 200, 2),
)

LOOK_ROWS = (("A/A", 48, 1), ("A/A", 200, 2), ("quality A/A, left-skewed", 200, 2), ("quality skewed shift", 200, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--looks-sims", type=int, default=1000)
    parser.add_argument("--only", help="run only the rows whose scenario starts with this")
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        f"{'scenario':<26} {'prompts':>7} {'trials':>6}  {'measure':<15} {'sequential':>12}  {'at looks':>12}  "
        f"{'fixed':>12}  {'fixed, precise':>14}  {'generations':>12}"
    )
    for scenario, n, trials in ROWS:
        if args.only and not scenario.startswith(args.only):
            continue
        r = row(args.sims, args.resamples, n, trials, scenario)
        measure = "power (alpha10)" if scenario.startswith("drop") else "any false alarm"
        print(
            f"{scenario:<26} {n:>7} {trials:>6}  {measure:<15} {r['seq'][0]:.3f} ±{r['seq'][1]:.3f}  "
            f"{r['looks'][0]:.3f} ±{r['looks'][1]:.3f}  "
            f"{r['fixed'][0]:.3f} ±{r['fixed'][1]:.3f}  {r['precise'][0]:>7.3f} ±{r['precise'][1]:.3f}  "
            f"{r['used'][0]:.3f} ±{r['used'][1]:.3f}",
            flush=True,
        )
    print(f"\nthe looks alone (their share of the error is {0.025 * SEQUENTIAL_SHARE:g}), {args.looks_sims} simulations per row")
    print(f"{'scenario':<26} {'prompts':>7} {'trials':>6}  {'anything shown at the looks':>28}")
    for scenario, n, trials in LOOK_ROWS:
        if args.only and not scenario.startswith(args.only):
            continue
        rate, se = looks_only(args.looks_sims, n, trials, scenario)
        print(f"{scenario:<26} {n:>7} {trials:>6}  {rate:>21.4f} ±{se:.4f}", flush=True)
    print(
        f"\n{args.sims} simulations per row (± one Monte-Carlo standard error), {args.resamples} bootstrap resamples, "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()

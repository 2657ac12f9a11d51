"""Choosing a steering strength by simulation: the error of Learn-then-Test and the winner's curse.

Each simulated run has a baseline and PASTA at strengths 2, 5, 10, 15, 20, 30, with known
true effects: a quality delta vs the baseline (quality per trial: a prompt effect, sd 1,
plus the strength's shift plus noise, sd 1) and a gain in strict prompt accuracy (each
prompt follows with its own probability, Beta(3, 7), mean 0.3, which a strength raises by
its gain on average). The prompts are split in half: the selection half chooses a strength
with :func:`pytest_steer.stats.choice.choose_strength` under the fail-if
``quality - baseline < -0.5`` at a one-sided error of 0.025; the evaluation half reports it.

Per scenario (the default effects, all strengths safe, none safe, the weakest strength on
the line) it prints:

* how often each strength is certified and chosen, and how often none is;
* the rate at which the chosen strength truly violates the constraint (true quality delta
  below -0.5), and is at or past the line (at most -0.5: on the line it is the limit of
  violating truths, the worst case), with Wilson 95% intervals, against the target 0.025;
* the same violation rate for a naive rule on the same prompts: the best follower among the
  strengths whose point estimate of the quality delta is at least -0.5;
* the chosen strength's estimated following gain minus its true gain, on the evaluation half
  (unbiased) and on the selection half it was chosen on (biased upwards: the winner's curse).

Usage: python benchmarks/bench_choice.py [--sims 1000] [--resamples 500] [--prompts 60] [--trials 2]
The run's bootstrap uses 2,000 resamples; the simulation uses fewer by default to fit in
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np

from pytest_steer.plan.options import SteerSettings
from pytest_steer.stats.aggregate import ConfigAggregate, aggregate
from pytest_steer.stats.choice import choose_strength
from pytest_steer.stats.gate_language import parse_gate
from pytest_steer.stats.levels import CONFIDENCE, one_sided_error

STRENGTHS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0)
FOLLOWING = "strict_prompt_accuracy"
LINE = -0.5
CONSTRAINT = parse_gate(f"quality - baseline < {LINE:g}")
ERROR = one_sided_error(CONFIDENCE)
BASELINE_FOLLOW = 0.3  # mean of Beta(3, 7)
QUALITY_MEAN = 5.0
MIN_PROMPTS = SteerSettings().min_prompts


@dataclass(frozen=True)
class Scenario:
    name: str
    quality: tuple[float, ...]  # true quality delta vs the baseline, per strength
    following: tuple[float, ...]  # true strict prompt accuracy gain vs the baseline, per strength


GAINS = (0.03, 0.07, 0.12, 0.17, 0.21, 0.25)
SCENARIOS = (
    Scenario("default", (0.0, -0.2, -0.4, -0.6, -0.9, -1.3), GAINS),
    Scenario("all safe", (0.0, -0.05, -0.1, -0.15, -0.2, -0.3), GAINS),
    Scenario("none safe", (-0.7, -0.8, -0.9, -1.0, -1.1, -1.3), GAINS),
    Scenario("boundary", (LINE, -0.6, -0.8, -1.0, -1.2, -1.5), GAINS),
)


def config_name(strength: float | None) -> str:
    return "baseline" if strength is None else f"pasta_alpha{strength:g}"


def simulate(rng: np.random.Generator, scenario: Scenario, n_prompts: int, trials: int) -> list[dict]:
    """Case records of one run: every prompt under the baseline and each strength, ``trials`` times."""
    prompt_quality = rng.normal(QUALITY_MEAN, 1.0, size=n_prompts)
    follow_p = rng.beta(3.0, 7.0, size=n_prompts)
    effects = [(None, 0.0, 0.0), *zip(STRENGTHS, scenario.quality, scenario.following)]
    out = []
    for strength, quality_delta, gain in effects:
        # Raising every p by gain * (1 - p) / (1 - mean) keeps it in [0, 1] and raises the mean by ``gain``.
        p = follow_p + gain * (1.0 - follow_p) / (1.0 - BASELINE_FOLLOW)
        follows = rng.random((n_prompts, trials)) < p[:, None]
        quality = prompt_quality[:, None] + quality_delta + rng.normal(0.0, 1.0, size=(n_prompts, trials))
        for i in range(n_prompts):
            for t in range(trials):
                followed = bool(follows[i, t])
                out.append(
                    {
                        "key": f"{i:04d}",
                        "config": config_name(strength),
                        "alpha": strength,
                        "method": None if strength is None else "pasta",
                        "trial": t,
                        "instruction_id_list": ["a:x"],
                        "strict": [followed],
                        "loose": [followed],
                        "follow_all_strict": followed,
                        "follow_all_loose": followed,
                        "quality": float(quality[i, t]),
                        "error": None,
                    }
                )
    return out


def deltas(aggregates: list[ConfigAggregate], metric: str) -> dict[float, float]:
    """Point estimate of ``metric - baseline`` per strength (every config has every prompt: paired = unpaired)."""
    by_name = {agg.name: agg for agg in aggregates}
    base = by_name[config_name(None)].interval(metric).mean
    return {s: by_name[config_name(s)].interval(metric).mean - base for s in STRENGTHS}


def naive_choice(selection: list[ConfigAggregate]) -> float | None:
    """The best follower among the strengths whose quality delta estimate is at least the line."""
    quality, following = deltas(selection, "quality"), deltas(selection, FOLLOWING)
    allowed = [s for s in STRENGTHS if quality[s] >= LINE]
    return max(allowed, key=lambda s: (following[s], -s)) if allowed else None


def _counts(*keys: float | None) -> dict[float | None, int]:
    return dict.fromkeys(keys, 0)


@dataclass
class Tally:
    sims: int
    certified: dict[float | None, int] = field(default_factory=lambda: _counts(*STRENGTHS))
    chosen: dict[float | None, int] = field(default_factory=lambda: _counts(*STRENGTHS, None))
    naive: dict[float | None, int] = field(default_factory=lambda: _counts(*STRENGTHS, None))
    error_selection: list[float] = field(default_factory=list)  # chosen strength: selection-half gain estimate - true gain
    error_evaluation: list[float] = field(default_factory=list)  # the same on the evaluation half


def run_scenario(scenario: Scenario, sims: int, resamples: int, n_prompts: int, trials: int, seed: int) -> Tally:
    rng = np.random.default_rng(seed)
    grid = [(s, config_name(s)) for s in STRENGTHS]
    truth = dict(zip(STRENGTHS, scenario.following))
    half = n_prompts // 2
    tally = Tally(sims=sims)
    for sim in range(sims):
        records = simulate(rng, scenario, n_prompts, trials)
        selection_records = [r for r in records if int(r["key"]) < half]
        selection = aggregate(selection_records, seed=sim, n_resamples=resamples)
        candidates, chosen, _, _ = choose_strength(
            selection, grid, [CONSTRAINT], following=FOLLOWING, max_errors=0, min_prompts=MIN_PROMPTS
        )
        for candidate in candidates:
            tally.certified[candidate.value] += candidate.certified
        tally.chosen[chosen] += 1
        tally.naive[naive_choice(selection)] += 1
        if chosen is None:
            continue
        evaluation = aggregate([r for r in records if int(r["key"]) >= half], seed=sim, n_resamples=resamples)
        tally.error_selection.append(deltas(selection, FOLLOWING)[chosen] - truth[chosen])
        tally.error_evaluation.append(deltas(evaluation, FOLLOWING)[chosen] - truth[chosen])
    return tally


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    rate = hits / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_line(label: str, hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"  {label:<52} {hits / n:.4f}  [{low:.4f}, {high:.4f}]  ({hits} of {n})"


def mean_line(label: str, values: list[float]) -> str:
    if len(values) < 2:
        return f"  {label:<52} n/a ({len(values)} runs with a choice)"
    arr = np.asarray(values)
    return f"  {label:<52} {arr.mean():+.4f} ± {arr.std(ddof=1) / math.sqrt(arr.size):.4f}  ({arr.size} runs with a choice)"


def report(scenario: Scenario, tally: Tally) -> None:
    quality = dict(zip(STRENGTHS, scenario.quality))
    print(f"scenario: {scenario.name}")
    print("  strength  true quality Δ  true following Δ  certified  chosen  naive chosen")
    for s, q, g in zip(STRENGTHS, scenario.quality, scenario.following):
        certified, chosen, naive = (count[s] / tally.sims for count in (tally.certified, tally.chosen, tally.naive))
        print(f"  {s:>8g}  {q:>+14.2f}  {g:>+16.2f}  {certified:>9.3f}  {chosen:>6.3f}  {naive:>12.3f}")
    print(f"  {'none':>8}  {'':>14}  {'':>16}  {'':>9}  {tally.chosen[None] / tally.sims:>6.3f}  {tally.naive[None] / tally.sims:>12.3f}")

    def count(choices: dict[float | None, int], violates) -> int:
        return sum(n for s, n in choices.items() if s is not None and violates(quality[s]))

    print(f"  target: at most {ERROR:g} (one-sided error); rates with Wilson 95% intervals")
    print(rate_line(f"chosen violates (true quality Δ < {LINE:g})", count(tally.chosen, lambda q: q < LINE), tally.sims))
    print(rate_line(f"chosen at or past the line (true quality Δ <= {LINE:g})", count(tally.chosen, lambda q: q <= LINE), tally.sims))
    print(rate_line("naive rule's choice violates", count(tally.naive, lambda q: q < LINE), tally.sims))
    print("  chosen strength's following Δ, estimate - truth (mean ± standard error):")
    print(mean_line("on the evaluation half (unseen by the choice)", tally.error_evaluation))
    print(mean_line("on the selection half (the winner's curse)", tally.error_selection))


def cpu_name() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "CPU: unknown (no lscpu)"
    return next((line.strip() for line in lscpu.splitlines() if line.startswith("Model name")), "CPU: unknown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=1000, help="simulated runs per scenario")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples per interval")
    parser.add_argument("--prompts", type=int, default=60, help="prompts per run, half selection, half evaluation")
    parser.add_argument("--trials", type=int, default=2, help="trials per prompt and config")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        f"{args.sims} runs per scenario; {args.prompts} prompts ({args.prompts // 2} select, {args.prompts - args.prompts // 2} "
        f"evaluate) x {args.trials} trials; constraint: fail-if '{CONSTRAINT.text}'; following: {FOLLOWING}; "
        f"{args.resamples} bootstrap resamples"
    )
    for index, scenario in enumerate(SCENARIOS):
        print()
        tally = run_scenario(scenario, args.sims, args.resamples, args.prompts, args.trials, seed=args.seed * 100 + index)
        report(scenario, tally)
    print()
    print(cpu_name())
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

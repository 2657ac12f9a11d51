"""Calibration of the gates by simulation, through the project's own aggregation and gates.

Each prompt has its own true follow probability, drawn from Beta(2, 2); a trial follows
with that probability. In A/A runs steering changes nothing; in power runs one steered
config's probabilities are halved, a true drop of 0.25 in strict prompt accuracy (the
Beta(2, 2) mean is 0.5). Prints:

* coverage of the 95% interval of strict prompt accuracy (truth 0.5), by prompts and trials;
* the A/A false-alarm rate of a family of fail-ifs, 6 steered configs x 2 metrics
  ("<metric> - baseline < 0"), with Holm's correction and without;
* the A/A pass rate of the old README gate ("alpha=10: strict_prompt_accuracy - baseline >= 0");
* the power of "alpha=10: strict_prompt_accuracy - baseline < 0" at 48 prompts x 2 trials,
  alone and within the 6 x 2 family.

Usage: python benchmarks/bench_gates.py [--sims 2000] [--resamples 500]
The run's bootstrap uses 2,000 resamples; the simulation uses fewer by default to fit in
minutes on 2 cores (tails move by about one resample's share).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pytest_steer.plan.options import SteerSettings
from pytest_steer.stats.aggregate import aggregate
from pytest_steer.stats.bootstrap import bootstrap
from pytest_steer.stats.gates import evaluate_gates

ALPHAS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0)
FAMILY_METRICS = ("strict_prompt_accuracy", "strict_instruction_accuracy")
DEFAULT_MIN_PROMPTS = SteerSettings().min_prompts


def records(rng: np.random.Generator, n_prompts: int, trials: int, drop_at: float | None) -> list[dict]:
    """Two-instruction prompts whose strict prompt accuracy is the prompt's probability ``q``.

    Each instruction is followed independently with probability ``sqrt(q)``, so both are
    followed with probability ``q`` and the two metrics of the family are not identical.
    """
    p = rng.beta(2.0, 2.0, size=n_prompts)
    out = []
    for alpha in (None, *ALPHAS):
        config = "baseline" if alpha is None else f"alpha{alpha:g}"
        q = p / 2.0 if alpha is not None and alpha == drop_at else p
        follows = rng.random((n_prompts, trials, 2)) < np.sqrt(q)[:, None, None]
        for i in range(n_prompts):
            for t in range(trials):
                verdicts = [bool(v) for v in follows[i, t]]
                out.append(
                    {
                        "key": f"{i:04d}",
                        "config": config,
                        "alpha": alpha,
                        "trial": t,
                        "instruction_id_list": ["a:x", "b:y"],
                        "strict": verdicts,
                        "loose": verdicts,
                        "follow_all_strict": all(verdicts),
                        "follow_all_loose": all(verdicts),
                        "quality": None,
                        "error": None,
                    }
                )
    return out


def coverage(sims: int, resamples: int) -> None:
    print("coverage of the 95% interval of the mean (truth 0.5), expanded percentile bootstrap")
    print("prompts  trials  coverage")
    for n in (5, DEFAULT_MIN_PROMPTS, 20, 48):
        for trials in (1, 2, 10):
            rng = np.random.default_rng(1000 * n + trials)
            covered = 0
            for _ in range(sims):
                values = rng.binomial(trials, rng.beta(2.0, 2.0, size=n)) / trials
                interval = bootstrap(values, n_resamples=resamples, seed=0).interval(0.95)
                covered += interval.ci_low <= 0.5 <= interval.ci_high
            print(f"{n:>7}  {trials:>6}  {covered / sims:.3f}")


def family_rates(sims: int, resamples: int, n_prompts: int, trials: int, drop_at: float | None) -> dict[str, float]:
    fail_ifs = [f"{m} - baseline < 0" for m in FAMILY_METRICS]
    target = "alpha=10: strict_prompt_accuracy - baseline < 0"
    counts = dict.fromkeys(("family_holm", "family_none", "single", "old_gate_passes", "caught_in_family"), 0)
    rng = np.random.default_rng(n_prompts * 100 + trials + (0 if drop_at is None else 7))
    for _ in range(sims):
        aggs = aggregate(records(rng, n_prompts, trials, drop_at), n_resamples=resamples)
        for correction in ("holm", "none"):
            results = evaluate_gates([], aggs, fail_ifs=fail_ifs, correction=correction, max_errors=0, min_prompts=1)
            alarms = [r for r in results if not r.passed]
            counts[f"family_{correction}"] += bool(alarms)
            if correction == "holm":
                counts["caught_in_family"] += any(r.config == "alpha10" and r.gate.endswith(fail_ifs[0]) for r in alarms)
        (single,) = evaluate_gates([], aggs, fail_ifs=[target], max_errors=0, min_prompts=1)
        counts["single"] += not single.passed
        (old,) = evaluate_gates(["alpha=10: strict_prompt_accuracy - baseline >= 0"], aggs, max_errors=0, min_prompts=1)
        counts["old_gate_passes"] += old.passed
    return {key: value / sims for key, value in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    coverage(args.sims, args.resamples)
    print()
    print(f"A/A, fail-ifs '<metric> - baseline < 0' on {len(ALPHAS)} alphas x {len(FAMILY_METRICS)} metrics")
    print("prompts  trials  false alarm (holm)  false alarm (none)  single fail-if  old '>= 0' gate passes")
    for n, trials in ((48, 1), (48, 2), (99, 1), (99, 10)):
        rates = family_rates(args.sims, args.resamples, n, trials, drop_at=None)
        print(
            f"{n:>7}  {trials:>6}  {rates['family_holm']:>18.3f}  {rates['family_none']:>18.3f}  "
            f"{rates['single']:>14.3f}  {rates['old_gate_passes']:>22.3f}"
        )
    print()
    print("power: alpha 10 drops strict prompt accuracy by 0.25 (probabilities halved)")
    print("prompts  trials  alone  in the 6x2 family (holm)")
    for n, trials in ((48, 2), (20, 2), (99, 1)):
        rates = family_rates(args.sims, args.resamples, n, trials, drop_at=10.0)
        print(f"{n:>7}  {trials:>6}  {rates['single']:.3f}  {rates['caught_in_family']:.3f}")
    print(f"\n{args.sims} simulations per row, {args.resamples} bootstrap resamples, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

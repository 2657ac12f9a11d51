"""Profiled heads against PASTA's default layers, on prompts the profiling never saw.

1. ``python -m pytest_steer profile OUT`` on the selection part of the prompts (layers, then the
   heads of the best layers, at ``--alpha``), timed;
2. one steer run on OUT/evaluation.jsonl with the baseline, PASTA on the default layers and PASTA
   on the profiled heads (both at ``--alpha``), timed;
3. the paired difference profiled - default on the evaluation prompts, with its 95% interval, for
   every accuracy metric and quality, and each against the baseline.

Usage: python benchmarks/bench_profile.py [--out DIR] [--limit 60] [--block 10] [--tokens 32] [--alpha 10] [--trials 2]
Prints the CPU flags it ran on and the wall time of each step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tables import print_table

from pytest_steer.model.numerics import cpu_features
from pytest_steer.stats.aggregate import aggregate, compare
from pytest_steer.stats.metrics import ACCURACY_METRICS, QUALITY_METRIC


def timed(args: list[str]) -> float:
    started = time.time()
    subprocess.run(args, check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("profile-embedded"))
    parser.add_argument("--limit", type=int, default=60, help="prompts of the built-in suite, split in half")
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=2, help="sampled responses per prompt in the evaluation run")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    print(f"CPU flags found: {', '.join(cpu_features()) or 'none of those looked for'}")
    steer = ["--steer-max-new-tokens", str(args.tokens), "--steer-dtype", args.dtype]
    profiling = timed([
        sys.executable, "-m", "pytest_steer", "profile", str(args.out), "--alpha", f"{args.alpha:g}", "--limit", str(args.limit),
        "--block", str(args.block), "--", *steer,
    ])  # fmt: skip
    report = args.out / "evaluation"
    evaluation = timed([
        sys.executable, "-m", "pytest", str(args.out / "suite" / "test_profile.py"), "-q", "-p", "no:cacheprovider",
        "--steer-dataset", str(args.out / "evaluation.jsonl"), "--steer-alpha", f"{args.alpha:g}",
        "--steer-method", f"pasta:alpha={args.alpha:g},heads={args.out / 'heads.json'}", "--steer-trials", str(args.trials),
        "--steer-report-dir", str(report), *steer,
    ])  # fmt: skip
    profile = json.loads((args.out / "results.json").read_text())["profile"]
    records = [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines() if line.strip()]
    aggregates = {agg.name: agg for agg in aggregate(records)}
    baseline = aggregates["baseline"]
    default = next(agg for agg in aggregates.values() if agg.method == "pasta" and agg.alpha is not None and "heads" not in agg.name)
    profiled = next(agg for agg in aggregates.values() if agg.method == "pasta" and "heads" in agg.name)
    prompts = len(profile["selection_prompts"])
    print(f"\nprofiled heads {json.dumps(profile['heads'])} at alpha {args.alpha:g}: {profiling:.0f} s on {prompts} prompts")
    print(f"evaluation run: {evaluation:.0f} s on {baseline.n_prompts} held-out prompts x {args.trials} trials, {args.tokens} new tokens")
    rows = [["metric", "baseline", "default layers", "profiled heads", "profiled - default [95% CI]"]]
    for metric in (*ACCURACY_METRICS, QUALITY_METRIC):
        if metric not in baseline.metrics:
            continue
        delta = compare(profiled, default, metric)
        rows.append([
            metric, f"{baseline.metrics[metric].mean:.3f}", f"{default.metrics[metric].mean:.3f}", f"{profiled.metrics[metric].mean:.3f}",
            f"{delta.mean:+.3f} [{delta.ci_low:+.3f}, {delta.ci_high:+.3f}]",
        ])  # fmt: skip
    print_table(rows)


if __name__ == "__main__":
    main()

"""Whole-process time of a first run against a fully cached rerun of the same suite.

Workload: 8 prompts × (baseline + PASTA alpha 10) × 2 trials × 32 new tokens on the
embedded model, fluency quality. Each round runs the suite as a fresh pytest process on
an empty response cache and report folder, then again on the cache and folder it filled;
rounds alternate so that drift in machine load hits both alike. Prints the minimum and median of each and the
ratio of the medians. A cached rerun reads the model's fingerprint from its files and
plans batches with the tokenizer alone, so it loads no weights.

    python benchmarks/bench_rerun.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOAD = ["--steer-limit", "8", "--steer-alpha", "10", "--steer-trials", "2", "--steer-max-new-tokens", "32"]
WORKLOAD += ["-q", "-p", "no:cacheprovider"]


def timed_run(state: Path) -> float:
    """One whole pytest process; `state` holds its response cache and report folder."""
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "ifeval"), *WORKLOAD, "--steer-cache-dir", str(state / "responses")]
    command += ["--steer-report-dir", str(state / "report")]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the suite failed (exit {result.returncode}):\n{result.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    first, rerun = [], []
    timed_run(Path(tempfile.mkdtemp()))  # warm-up: the embedded model's conversion and the OS file cache
    for _ in range(args.rounds):
        state = Path(tempfile.mkdtemp(prefix="steer-bench-"))
        first.append(timed_run(state))
        rerun.append(timed_run(state))
    print(f"first run, empty cache: min {min(first):.2f} s, median {statistics.median(first):.2f} s ({args.rounds} rounds)")
    print(f"rerun, every case cached: min {min(rerun):.2f} s, median {statistics.median(rerun):.2f} s")
    print(f"rerun / first run (medians): {statistics.median(rerun) / statistics.median(first):.3f} (target <= 0.2)")


if __name__ == "__main__":
    main()

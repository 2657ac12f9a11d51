"""What the default quality score costs: whole runs with ``--steer-quality fluency`` against ``none``.

Workload: the built-in suite's first 16 prompts × (baseline + PASTA alpha 10 + emphasis)
× 32 new tokens on the embedded model, no response cache. Each round runs the suite once
per scorer as a fresh pytest process, the order alternating from round to round so that
drift in machine load hits both alike. Prints the minimum and median of each, the ratio of
the medians and of the minimums, and the spread of the per-round ratios (the noise).

    python benchmarks/bench_fluency.py [--rounds 5]
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
WORKLOAD = ["--steer-limit", "16", "--steer-alpha", "10", "--steer-method", "emphasis", "--steer-max-new-tokens", "32", "--steer-no-cache"]
WORKLOAD += ["-q", "-p", "no:cacheprovider"]
SCORERS = ("fluency", "none")
TARGET = 1.10


def timed_run(quality: str) -> float:
    """One whole pytest process of the workload under ``--steer-quality quality``."""
    report = tempfile.mkdtemp(prefix="steer-bench-")
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "ifeval"), *WORKLOAD]
    command += ["--steer-quality", quality, "--steer-report-dir", report]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the suite failed under --steer-quality {quality} (exit {result.returncode}):\n{result.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    timed_run("none")  # warm-up: the embedded model's conversion and the OS file cache
    times: dict[str, list[float]] = {quality: [] for quality in SCORERS}
    for round_index in range(args.rounds):
        order = SCORERS if round_index % 2 == 0 else SCORERS[::-1]
        for quality in order:
            times[quality].append(timed_run(quality))
    for quality in SCORERS:
        runs = times[quality]
        print(f"--steer-quality {quality}: min {min(runs):.2f} s, median {statistics.median(runs):.2f} s ({args.rounds} rounds)")
    ratios = [with_score / without for with_score, without in zip(times["fluency"], times["none"])]
    medians = statistics.median(times["fluency"]) / statistics.median(times["none"])
    minimums = min(times["fluency"]) / min(times["none"])
    print(f"fluency cost, fluency / none: medians {medians:.3f}, minimums {minimums:.3f} (target <= {TARGET})")
    print(f"per-round ratios: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()

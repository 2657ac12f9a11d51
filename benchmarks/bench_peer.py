"""Whole-process time of pytest-steer against AISteer360 v0.3.0's Benchmark on the same work.

The workload (written by the peers folder's ``peer16.py``): 16 single-instruction IFEval
prompts (4 instruction ids × 4), baseline + PASTA alpha 10 (layers 8-23, include),
2 sampled trials, 32 new tokens, strict checks only, no quality score, SmolLM2-135M-Instruct
fp32 eager on the CPU. Each round runs both as fresh processes, back to back, after one
warm-up run of each (model conversion, OS file cache); prints the minimum and median of
each and the ratio of the medians (target <= 0.3).

AISteer360 needs transformers < 5, so it runs in an environment of its own; the peers
folder's README says how to make it.

    python benchmarks/bench_peer.py --peer-python /path/to/aisteer360-venv/bin/python [--rounds 3] [--dtype float32|auto]
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
TRIALS, NEW_TOKENS = 2, 32


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1):  # pytest-steer's strict cases may miss instructions: exit 1 is a result
        raise SystemExit(f"{command[:3]} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="python of the environment with AISteer360 installed")
    parser.add_argument("--peers", type=Path, default=REPO.parent / "shared" / "peers", help="the folder with peer16.py")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="pytest-steer's --steer-dtype (AISteer360 runs float32)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="steer-peer-"))
    workload = work / "peer16.jsonl"
    subprocess.run([sys.executable, str(args.peers / "peer16.py"), str(workload)], check=True)
    peer = [args.peer_python, str(args.peers / "aisteer360_bench.py"), str(workload), str(TRIALS), str(NEW_TOKENS)]
    ours = [
        sys.executable, "-m", "pytest", str(REPO / "suites" / "ifeval"), "--steer-dataset", str(workload),
        "--steer-alpha", "10", "--steer-trials", str(TRIALS), "--steer-max-new-tokens", str(NEW_TOKENS),
        "--steer-quality", "none", "--steer-no-cache", "--steer-report-dir", str(work / "report"), "-q", "-p", "no:cacheprovider",
        "--steer-dtype", args.dtype,
    ]  # fmt: skip

    timed(peer, work), timed(ours, REPO)  # warm-up
    peer_times, our_times = [], []
    for _ in range(args.rounds):
        peer_times.append(timed(peer, work))
        our_times.append(timed(ours, REPO))
        print(
            f"round {len(our_times)}: AISteer360 {peer_times[-1]:.1f} s, pytest-steer {our_times[-1]:.1f} s, "
            f"ratio {our_times[-1] / peer_times[-1]:.3f}",
            flush=True,
        )
    print(f"AISteer360 Benchmark: min {min(peer_times):.1f} s, median {statistics.median(peer_times):.1f} s ({args.rounds} rounds)")
    print(f"pytest-steer:         min {min(our_times):.1f} s, median {statistics.median(our_times):.1f} s")
    ratio = statistics.median(our_times) / statistics.median(peer_times)
    per_round = [ours / theirs for ours, theirs in zip(our_times, peer_times)]
    print(f"pytest-steer / AISteer360: {ratio:.3f} of the medians, per round {min(per_round):.3f} to {max(per_round):.3f} (target <= 0.3)")


if __name__ == "__main__":
    main()

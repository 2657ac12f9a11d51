"""Whole runs of the demo's work, as pytest processes: decode throughput against the step's bound, bfloat16 against
float32, and what a sequential run pays per case, each ratio measured in one run of this script.

The work: the shipped IFEval suite on the embedded model, every built-in prompt (``--prompts``) × baseline, PASTA
alpha 10 and emphasis × 1 trial, no response cache. Per dtype (``--dtypes``; ``auto`` is what ``--steer-dtype
auto`` picks here, and the script prints why):

1. ``--steer-quality none`` at ``--new-tokens`` and at 1 new token: decode tokens/s over the whole run is
   (generated tokens − cases) ÷ (the run's wall time − the same run's at 1 new token), against the 64-row
   decode-step bound of ``bench_roofline.py`` (every weight matmul of a 64-row step plus one read of the KV cache
   at the measured bandwidth), measured in this process for the same dtype before, between and after the two runs,
   the highest of the three kept (the machine's speed drifts; the highest bound makes the ratio the least flattering),
   with the fastest layout of the weights (packed included) and with the two plain layouts alone;
2. the demo's two checks (``scripts/demo.sh``: a gate on strict prompt accuracy, a fail-if on fluency) fixed and
   under ``--steer-sequential`` (default block): (sequential wall ÷ fixed wall) ÷ (sequential cases ÷ fixed cases).

Wall times are of whole processes (interpreter start, imports, model load, report included). The CPU flags this
ran on are printed first.

    python benchmarks/bench_run.py [--prompts 99] [--new-tokens 64] [--dtypes float32,auto] [--no-sequential]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_roofline import kv_bytes_per_token, matmul_seconds, memory_bandwidth  # benchmarks/, beside this script
from tables import print_table

from pytest_steer.model.kernels import measured_kernel
from pytest_steer.model.loading import load_model
from pytest_steer.model.numerics import choose_format, cpu_features
from pytest_steer.model.prompts import prompt_lengths
from pytest_steer.plan.data import load_rows

REPO = Path(__file__).resolve().parents[1]
CHECKS = ["--steer-gate", "strict_prompt_accuracy - baseline >= -0.15", "--steer-fail-if", "quality - baseline < -1"]
BOUND_ROWS = 64


def run(args: list[str], report: Path) -> tuple[float, dict]:
    """Wall seconds of one pytest process over the suite, and its standalone results.json (with its cases)."""
    command = [sys.executable, "-m", "pytest", "suites/ifeval", "-q", "-p", "no:cacheprovider", "--steer-no-cache"]
    command += ["--steer-report-dir", str(report), "--steer-json", str(report / "run.json"), *args]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):  # a failed gate or strict case is a result
        raise SystemExit(f"pytest failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    return seconds, json.loads((report / "run.json").read_text())


def generated(results: dict) -> tuple[int, int]:
    """(cases generated, new tokens generated) of a run."""
    cases = [case for case in results["cases"] if not case.get("error") and case.get("n_new_tokens") is not None]
    return len(cases), sum(case["n_new_tokens"] for case in cases)


def step_bound(dtype: str, mean_context: float) -> tuple[float, float]:
    """Tokens/s of a 64-row decode step that only multiplies the weights and reads the KV cache once: with the fastest
    layout of the weights here (packed included), and with the fastest of the two plain layouts."""
    model = load_model(device="cpu", dtype=dtype).model
    matmuls = matmul_seconds(model, BOUND_ROWS, repeats=3)
    kv_seconds = BOUND_ROWS * mean_context * kv_bytes_per_token(model) / memory_bandwidth()
    plain = min(matmuls["as held"], matmuls["(in, out)"])
    return BOUND_ROWS / (min(matmuls.values()) + kv_seconds), BOUND_ROWS / (plain + kv_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=99)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtypes", default="float32,auto")
    parser.add_argument("--no-sequential", action="store_true", help="leave out the fixed/sequential pair")
    parser.add_argument("--device", default="cpu", help="--steer-device of the runs; the step bound is measured on a CPU only")
    args = parser.parse_args()

    device_type = "cuda" if args.device.startswith("cuda") else args.device
    choice = choose_format(device_type)
    print(f"CPU flags found: {', '.join(cpu_features()) or 'none of those looked for'}; torch threads {torch.get_num_threads()}")
    print(f"--steer-dtype auto here: {choice.dtype} ({choice.reason})")
    work = ["--steer-limit", str(args.prompts), "--steer-alpha", "10", "--steer-method", "emphasis", "--steer-device", args.device]
    work += ["--steer-min-prompts", str(min(10, args.prompts))]  # a short trial run still judges its checks
    rows = load_rows("builtin")[: args.prompts]
    tokenizer = load_model(device="cpu", dtype="float32").tokenizer
    mean_context = statistics.mean(prompt_lengths(tokenizer, [row.prompt for row in rows])) + args.new_tokens / 2

    table = [("dtype", "measure", "value")]
    decode_rates = {}
    with tempfile.TemporaryDirectory() as scratch:
        for dtype in args.dtypes.split(","):
            resolved = choice.dtype if dtype == "auto" else dtype
            common = [*work, "--steer-dtype", resolved]
            bounds = [step_bound(resolved, mean_context)] if device_type == "cpu" else []
            full, full_results = run(
                [*common, "--steer-quality", "none", "--steer-max-new-tokens", str(args.new_tokens)], Path(scratch, f"{dtype}-full")
            )
            bounds += [step_bound(resolved, mean_context)] if device_type == "cpu" else []
            one, _ = run([*common, "--steer-quality", "none", "--steer-max-new-tokens", "1"], Path(scratch, f"{dtype}-one"))
            cases, tokens = generated(full_results)
            decode = (tokens - cases) / (full - one)
            decode_rates[dtype] = decode
            label = f"{dtype} ({resolved})"
            table += [
                (label, f"run at {args.new_tokens} new tokens, quality none", f"{full:.1f} s ({cases} cases, {tokens} tokens)"),
                (label, "run at 1 new token", f"{one:.1f} s"),
                (label, "decode tokens/s over the run", f"{decode:.0f}"),
            ]
            if device_type == "cpu":
                bounds.append(step_bound(resolved, mean_context))
                bound, plain = (max(values) for values in zip(*bounds))  # the fastest of before, between and after the runs
                table += [
                    (label, "linear layers (as measured here)", measured_kernel(resolved).reason),
                    (label, f"{BOUND_ROWS}-row step bound, tokens/s", f"{bound:.0f} (of {len(bounds)} measures, the highest)"),
                    (label, "decode / bound", f"{decode / bound:.2f}"),
                    (label, f"{BOUND_ROWS}-row step bound of the plain layouts", f"{plain:.0f}"),
                    (label, "decode / plain layouts' bound", f"{decode / plain:.2f}"),
                ]
            if args.no_sequential:
                continue
            demo = [*common, "--steer-max-new-tokens", str(args.new_tokens), *CHECKS]
            fixed, fixed_results = run(demo, Path(scratch, f"{dtype}-fixed"))
            sequential, sequential_results = run([*demo, "--steer-sequential"], Path(scratch, f"{dtype}-sequential"))
            fixed_cases, sequential_cases = generated(fixed_results)[0], generated(sequential_results)[0]
            per_case = (sequential / fixed) / (sequential_cases / fixed_cases)
            table += [
                (label, "demo, fixed", f"{fixed:.1f} s ({fixed_cases} cases)"),
                (label, "demo, --steer-sequential", f"{sequential:.1f} s ({sequential_cases} cases)"),
                (label, "sequential per-case cost / fixed", f"{per_case:.2f}"),
            ]
    if len(decode_rates) > 1 and "float32" in decode_rates:
        for dtype, rate in decode_rates.items():
            if dtype != "float32":
                table.append((dtype, "decode over the run / float32's", f"{rate / decode_rates['float32']:.2f}"))
    print_table(table)


if __name__ == "__main__":
    main()

"""Linear layers on packed weights against plain ones: the engine's decode and prefill, in one process.

Two copies of the embedded model are loaded per dtype, one with its linear layers packed in oneDNN's layout
(``pytest_steer.model.kernels``) and one plain. Each round generates the first ``--prompts`` built-in prompts (one
sampled response each, ``--new-tokens`` new tokens, one batch) with both, in alternating order; decode tokens/s
leaves out the prefill (timed by a forward hook, as in ``bench_roofline.py``). Prints, per round and as medians,
packed ÷ plain for decode tokens/s and plain ÷ packed for the prefill's seconds, the decision a run would take here
and the CPU flags it ran on.

    python benchmarks/bench_kernels.py [--prompts 64] [--new-tokens 32] [--rounds 4] [--dtypes float32,bfloat16]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_roofline import PrefillTimer, engine_rates  # benchmarks/, beside this script
from tables import print_table

from pytest_steer.engine.generation import Engine
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.model.kernels import measured_kernel
from pytest_steer.model.loading import load_model
from pytest_steer.model.numerics import cpu_features
from pytest_steer.plan.cases import build_cases, steering_configs
from pytest_steer.plan.data import load_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    print(f"CPU flags found: {', '.join(cpu_features()) or 'none of those looked for'}; torch threads {torch.get_num_threads()}")
    cases = build_cases(load_rows("builtin")[: args.prompts], steering_configs([]), trials=1, seed=0, highlight="auto")
    requests = [GenerationRequest(case.row.prompt, case.seed) for case in cases]
    table = [("dtype", "round", "decode tokens/s plain", "packed", "packed / plain", "prefill s plain", "packed", "plain / packed")]
    for dtype in args.dtypes.split(","):
        print(f"{dtype}: a run here would multiply {measured_kernel(dtype).reason}")
        engines = {}
        for packed in (False, True):
            loaded = load_model(device="cpu", dtype=dtype, packed_linears=packed)
            engines[packed] = (Engine(loaded, GenerationSettings(max_new_tokens=args.new_tokens)), PrefillTimer(loaded.model))
            engines[packed][0].generate(requests[:4])  # warm-up
        decode_ratios, prefill_ratios = [], []
        for round_index in range(args.rounds):
            figures = {}
            for packed in (False, True) if round_index % 2 == 0 else (True, False):
                engine, timer = engines[packed]
                figures[packed] = (engine_rates(engine, timer, requests)[0], timer.seconds)
            (plain_rate, plain_prefill), (packed_rate, packed_prefill) = figures[False], figures[True]
            decode_ratios.append(packed_rate / plain_rate)
            prefill_ratios.append(plain_prefill / packed_prefill)
            table.append((dtype, str(round_index + 1), f"{plain_rate:.0f}", f"{packed_rate:.0f}", f"{decode_ratios[-1]:.2f}",
                          f"{plain_prefill:.2f}", f"{packed_prefill:.2f}", f"{prefill_ratios[-1]:.2f}"))  # fmt: skip
        medians = f"{statistics.median(decode_ratios):.2f}", f"{statistics.median(prefill_ratios):.2f}"
        table.append((dtype, "median", "", "", medians[0], "", "", medians[1]))
    print(f"{len(requests)} built-in prompts x {args.new_tokens} new tokens, sampling, one batch; {args.rounds} rounds, alternating")
    print_table(table)


if __name__ == "__main__":
    main()

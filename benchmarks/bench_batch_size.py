"""Engine throughput by batch size on this machine: what the CPU's default batch size rests on.

The same prompts of the built-in suite (sampling, the embedded model) are generated in
batches of each size; rounds visit the sizes in rotating order, so that drift in machine
load spreads over all of them. Prints, per size, the minimum and median tokens/s over the
rounds and the median relative to the current default (``CPU_BATCH_SIZE``).

    python benchmarks/bench_batch_size.py [--sizes 4,8,16,32] [--prompts 32] [--trials 1] [--new-tokens 32] [--rounds 3]
        [--dtype auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_steer.engine.generation import Engine
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.model.loading import load_model
from pytest_steer.plan.batches import CPU_BATCH_SIZE, batch_indices
from pytest_steer.plan.cases import build_cases, steering_configs
from pytest_steer.plan.data import load_rows


def tokens_per_second(engine: Engine, requests: list[GenerationRequest], size: int) -> float:
    lengths = engine.prompt_lengths([request.prompt for request in requests])
    start = time.perf_counter()
    tokens = sum(g.n_new_tokens for batch in batch_indices(lengths, size) for g in engine.generate([requests[i] for i in batch]))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8,16,32")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--trials", type=int, default=1, help="sampled responses per prompt (they share its prefill)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="auto", help="--steer-dtype of the runs (auto: what a run picks here)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    loaded = load_model(device="cpu", dtype=args.dtype)
    engine = Engine(loaded, GenerationSettings(max_new_tokens=args.new_tokens))
    cases = build_cases(load_rows("builtin")[: args.prompts], steering_configs([]), trials=args.trials, seed=0, highlight="auto")
    requests = [GenerationRequest(case.row.prompt, case.seed, case.highlights) for case in cases]
    engine.generate(requests[:2])  # warm-up
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for round_number in range(args.rounds):
        for size in sizes[round_number % len(sizes) :] + sizes[: round_number % len(sizes)]:
            rates[size].append(tokens_per_second(engine, requests, size))
    reference = statistics.median(rates[CPU_BATCH_SIZE]) if CPU_BATCH_SIZE in rates else None
    print(
        f"{args.prompts} prompts x {args.trials} trial(s) x {args.new_tokens} new tokens, sampling, {loaded.fingerprint.dtype}, "
        f"{args.rounds} rounds; "
        f"default CPU batch {CPU_BATCH_SIZE}"
    )
    print("batch  min tokens/s  median tokens/s  median vs default")
    for size in sizes:
        median = statistics.median(rates[size])
        relative = f"{median / reference:.2f}" if reference else "-"
        print(f"{size:>5}  {min(rates[size]):>12.1f}  {median:>15.1f}  {relative:>17}")


if __name__ == "__main__":
    main()

"""Throughput of the generation engine, steering overhead, cached reruns and peak memory.

One run on the embedded SmolLM2-135M-Instruct (sampling, temperature 0.7) over prompts of
the built-in suite:

- batched engine (``batch_indices`` + ``Engine.generate``) against a one-prompt-at-a-time
  loop over the same cases and seeds (target: >= 4x tokens/s), and whether both give the
  same responses (a response must not depend on its batch);
- PASTA-steered (alpha 10, default heads, include) against unsteered throughput
  (target: >= 0.9);
- a cached rerun of ``CaseRunner`` (baseline + alpha 10, fluency quality) against its
  first run with an empty cache (target: <= 0.05); both include loading the model, as a
  fresh pytest process would;
- peak resident memory (and peak CUDA memory on a GPU).

    python benchmarks/bench_engine.py [--prompts 16] [--new-tokens 64] [--batch 16] [--naive-prompts 16]
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from pytest_steer.cases import build_cases, steering_configs
from pytest_steer.data import load_rows
from pytest_steer.generation import Engine, Generation, GenerationRequest, GenerationSettings, batch_indices
from pytest_steer.models import load_model
from pytest_steer.options import SteerSettings
from pytest_steer.runner import runner_for
from pytest_steer.steering import PASTA, default_head_layers


def batched(engine: Engine, requests: list[GenerationRequest], batch: int, steering: PASTA | None) -> tuple[list[Generation], float]:
    lengths = engine.prompt_lengths([r.prompt for r in requests])
    results: list[Generation | None] = [None] * len(requests)
    start = time.perf_counter()
    for indices in batch_indices(lengths, batch):
        for i, generation in zip(indices, engine.generate([requests[i] for i in indices], steering)):
            results[i] = generation
    return [g for g in results if g is not None], time.perf_counter() - start


def one_at_a_time(engine: Engine, requests: list[GenerationRequest]) -> tuple[list[Generation], float]:
    start = time.perf_counter()
    results = [engine.generate([request])[0] for request in requests]
    return results, time.perf_counter() - start


def tokens(generations: list[Generation]) -> int:
    return sum(g.n_new_tokens for g in generations)


def timed_runner(settings: SteerSettings, cache_dir: Path) -> tuple[float, int]:
    """Wall time of a whole run (model load included) and how many cases came from the cache."""
    from pytest_steer.collection import plan_cases

    start = time.perf_counter()
    plan = plan_cases(settings)
    runner = runner_for(settings, plan, cache_dir=cache_dir)
    records = [runner.record(case) for case in plan.cases]
    return time.perf_counter() - start, sum(r.cached for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--naive-prompts", type=int, default=16, help="cases of the one-at-a-time loop (a prefix of the prompts)")
    parser.add_argument("--alpha", type=float, default=10.0)
    args = parser.parse_args()

    loaded = load_model()
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    engine = Engine(loaded, settings)
    rows = load_rows("builtin")[: args.prompts]
    cases = build_cases(rows, steering_configs([]), trials=1, seed=0, highlight="auto")
    requests = [GenerationRequest(c.row.prompt, c.seed, c.highlights) for c in cases]
    steering = PASTA(head_config=default_head_layers(loaded.model.config.num_hidden_layers), alpha=args.alpha)
    engine.generate(requests[:2], steering)  # warm-up: first-call allocations and lazy imports

    unsteered, t_unsteered = batched(engine, requests, args.batch, None)
    steered, t_steered = batched(engine, requests, args.batch, steering)
    naive_requests = requests[: args.naive_prompts]
    naive, t_naive = one_at_a_time(engine, naive_requests)
    same_batch = unsteered[: len(naive)]
    batched_subset, t_batched_subset = batched(engine, naive_requests, args.batch, None)
    identical = sum(a == b for a, b in zip(naive, same_batch))

    run_settings = SteerSettings(alpha=(args.alpha,), limit=args.prompts, max_new_tokens=args.new_tokens, batch_size=args.batch)
    with tempfile.TemporaryDirectory() as cache_dir:
        t_first, cached_first = timed_runner(run_settings, Path(cache_dir))
        t_rerun, cached_rerun = timed_runner(run_settings, Path(cache_dir))
    n_run_cases = 2 * len(rows)

    rate = {
        "batched": tokens(batched_subset) / t_batched_subset,
        "naive": tokens(naive) / t_naive,
        "unsteered": tokens(unsteered) / t_unsteered,
        "steered": tokens(steered) / t_steered,
    }
    maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(
        f"model: {loaded.fingerprint.name} ({loaded.fingerprint.dtype}, {loaded.fingerprint.attn_implementation}) on {loaded.device}; "
        f"torch threads {torch.get_num_threads()}; {len(rows)} prompts x {args.new_tokens} new tokens, batch {args.batch}, sampling"
    )
    print()
    table = [
        ("measure", "value", "target"),
        (f"batched engine tokens/s ({len(naive_requests)} cases)", f"{rate['batched']:.1f}", ""),
        (f"one-at-a-time tokens/s (same {len(naive_requests)} cases)", f"{rate['naive']:.1f}", ""),
        ("batched / one-at-a-time", f"{rate['batched'] / rate['naive']:.2f}x", ">= 4x"),
        ("responses identical batched vs one-at-a-time", f"{identical}/{len(naive)}", f"{len(naive)}/{len(naive)}"),
        (f"unsteered tokens/s ({len(rows)} cases)", f"{rate['unsteered']:.1f}", ""),
        (f"steered tokens/s (PASTA alpha {args.alpha:g}, default heads)", f"{rate['steered']:.1f}", ""),
        ("steered / unsteered", f"{rate['steered'] / rate['unsteered']:.2f}", ">= 0.9"),
        (f"CaseRunner first run ({n_run_cases} cases, empty cache)", f"{t_first:.1f} s ({cached_first} cached)", ""),
        ("CaseRunner rerun (same cache)", f"{t_rerun:.2f} s ({cached_rerun} cached)", ""),
        ("rerun / first run", f"{t_rerun / t_first:.3f}", "<= 0.05"),
        ("peak RSS", f"{maxrss_mib:.0f} MiB", ""),
    ]
    if torch.cuda.is_available():
        table.append(("peak CUDA memory allocated", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", ""))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for number, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()

"""The sampler's share of a decode step: is the draw over the vocabulary worth optimizing?

For each row count: the time of ``RowSampler`` (temperature, softmax, one float64 cumulative sum over the
49,152-token vocabulary, the inverse-CDF draw of ``pytest_steer.engine.sampling``) and of the embedded model's
decode step over a 64-token KV cache at that row count, in one run. The sampler's rounds take the best.

Usage: python benchmarks/bench_sampling.py [--rows 8,16,32,64] [--vocab 49152] [--rounds 5]
(the step is transformers' own forward with a DynamicCache, slower than the engine's: the share in the engine is larger)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from tables import print_table

from pytest_steer.engine.decoding import cache_argument
from pytest_steer.engine.sampling import RowSampler
from pytest_steer.model.numerics import cpu_features


def best_ms(work: Callable[..., object], *args: object, repeats: int = 20) -> float:
    work(*args)
    started = time.perf_counter()
    for _ in range(repeats):
        work(*args)
    return (time.perf_counter() - started) / repeats * 1000


def step_ms(model: torch.nn.Module, rows: int, context: int = 64) -> float:
    """One decode step of ``rows`` rows over a ``context``-token KV cache (prefilled once; each timed step adds a token)."""
    from transformers import DynamicCache

    ids = torch.randint(0, model.config.vocab_size, (rows, context))
    with torch.inference_mode():
        cache = {cache_argument(model): DynamicCache()}
        model(input_ids=ids, use_cache=True, **cache)
        token = ids[:, -1:]

        def step() -> None:
            model(input_ids=token, use_cache=True, **cache)

        return best_ms(step, repeats=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="8,16,32,64")
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU flags found: {', '.join(cpu_features()) or 'none of those looked for'}; torch threads {torch.get_num_threads()}")
    from pytest_steer.model.loading import load_model

    model = load_model(device="cpu", dtype="float32", attn_implementation="eager").model
    sampler = RowSampler(temperature=0.7, top_p=1.0)
    table = [["rows", "sampler ms", "decode step ms", "sampler share of a step"]]
    for rows in (int(text) for text in args.rows.split(",")):
        scores = torch.randn(rows, args.vocab)
        seeds = torch.arange(rows)
        sampled = min(best_ms(sampler, scores, seeds, round_) for round_ in range(args.rounds))
        step = step_ms(model, rows)
        table.append([str(rows), f"{sampled:.2f}", f"{step:.1f}", f"{sampled / (step + sampled):.1%}"])
    print_table(table)


if __name__ == "__main__":
    main()

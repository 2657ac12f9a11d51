"""Throughput of the generation engine against transformers' generate, one prompt at a time, and under PASTA.

On the embedded SmolLM2-135M-Instruct, sampling at temperature 0.7, over prompts of the
built-in suite with several trials each (as a run has them):

- the engine (``Engine.generate``: one prefill per distinct prompt, rows dropped as they
  end) against transformers' ``generate`` on the same batches with the same per-row
  sampler, which prefills every row and runs every row to the last step; and whether both
  give the same responses;
- the engine's batches against one case at a time (target >= 4x);
- PASTA-steered (alpha 10, default heads, include) against unsteered (target >= 0.9);
- peak resident memory (and peak CUDA memory on a GPU).

Every measure is taken once per round, rounds alternate the order, and the minimum and
median over rounds are printed; ratios are of the medians.

    python benchmarks/bench_engine.py [--prompts 16] [--trials 2] [--new-tokens 64] [--batch 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
from tables import print_table  # benchmarks/tables.py, beside this script
from transformers import LogitsProcessor, LogitsProcessorList

from pytest_steer.engine.generation import Engine
from pytest_steer.engine.requests import Generation, GenerationRequest, GenerationSettings
from pytest_steer.engine.sampling import RowSampler
from pytest_steer.model.loading import load_model
from pytest_steer.model.prompts import render_prompt
from pytest_steer.plan.batches import batch_indices
from pytest_steer.plan.cases import build_cases, steering_configs
from pytest_steer.plan.data import load_rows
from pytest_steer.steering import PASTA, default_head_layers


class ForcedSampler(LogitsProcessor):
    """The engine's sampler inside generate: only the drawn token keeps a finite score."""

    def __init__(self, sampler: RowSampler, seeds: torch.Tensor) -> None:
        self.sampler, self.seeds, self.step = sampler, seeds, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        choice = self.sampler(scores, self.seeds, self.step)
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(-1, choice[:, None], 0.0)


def with_generate(engine: Engine, requests: list[GenerationRequest]) -> list[Generation]:
    """One batch through transformers' generate, cut after each row's first end-of-sequence token."""
    loaded = engine.loaded
    texts = [render_prompt(loaded.tokenizer, r.prompt) for r in requests]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    seeds = torch.tensor([r.seed for r in requests], dtype=torch.int64)
    sampler = ForcedSampler(RowSampler(engine.settings.temperature, engine.settings.top_p), seeds)
    with torch.inference_mode():
        out = loaded.model.generate(
            **batch, max_new_tokens=engine.settings.max_new_tokens, do_sample=False, logits_processor=LogitsProcessorList([sampler]),
            eos_token_id=sorted(engine.eos_ids), pad_token_id=loaded.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
        )  # fmt: skip
    generations = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        ends = [i for i, token in enumerate(row) if token in engine.eos_ids]
        row = row[: ends[0] + 1] if ends else row
        generations.append(Generation(loaded.tokenizer.decode(row, skip_special_tokens=True), len(row)))
    return generations


Generate = Callable[[list[GenerationRequest]], list[Generation]]


def batched(generate: Generate, engine: Engine, requests: list[GenerationRequest], batch: int) -> tuple[list[Generation], float]:
    lengths = engine.prompt_lengths([r.prompt for r in requests])
    results: list[Generation | None] = [None] * len(requests)
    start = time.perf_counter()
    for indices in batch_indices(lengths, batch):
        for i, generation in zip(indices, generate([requests[i] for i in indices])):
            results[i] = generation
    return [g for g in results if g is not None], time.perf_counter() - start


def tokens(generations: list[Generation]) -> int:
    return sum(g.n_new_tokens for g in generations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--naive-cases", type=int, default=8, help="cases of the one-at-a-time loop (a prefix of the cases)")
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model()
    engine = Engine(loaded, GenerationSettings(max_new_tokens=args.new_tokens))
    rows = load_rows("builtin")[: args.prompts]
    cases = build_cases(rows, steering_configs([]), trials=args.trials, seed=0, highlight="auto")
    requests = [GenerationRequest(c.row.prompt, c.seed, c.highlights) for c in cases]
    steering = PASTA(head_config=default_head_layers(loaded.model.config.num_hidden_layers), alpha=args.alpha)
    engine.generate(requests[:2], steering)  # warm-up: first-call allocations and lazy imports

    measures: dict[str, Callable[[], tuple[list[Generation], float]]] = {
        "engine": lambda: batched(engine.generate, engine, requests, args.batch),
        "transformers generate": lambda: batched(lambda rs: with_generate(engine, rs), engine, requests, args.batch),
        "engine, PASTA": lambda: batched(lambda rs: engine.generate(rs, steering), engine, requests, args.batch),
        "one case at a time": lambda: batched(engine.generate, engine, requests[: args.naive_cases], 1),
        "engine, same cases": lambda: batched(engine.generate, engine, requests[: args.naive_cases], args.batch),
    }
    rates: dict[str, list[float]] = {name: [] for name in measures}
    outputs: dict[str, list[Generation]] = {}
    for round_index in range(args.rounds):
        order = list(measures) if round_index % 2 == 0 else list(reversed(measures))
        for name in order:
            generations, seconds = measures[name]()
            rates[name].append(tokens(generations) / seconds)
            outputs[name] = generations
        print(f"round {round_index + 1}: " + ", ".join(f"{name} {rates[name][-1]:.1f}" for name in measures), flush=True)

    median = {name: statistics.median(values) for name, values in rates.items()}
    same = sum(a == b for a, b in zip(outputs["engine"], outputs["transformers generate"]))
    ended_early = sum(g.n_new_tokens < args.new_tokens for g in outputs["engine"])
    maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(
        f"model: {loaded.fingerprint.name} ({loaded.fingerprint.dtype}, {loaded.fingerprint.attn_implementation}) on {loaded.device}; "
        f"torch threads {torch.get_num_threads()}; {len(rows)} prompts x {args.trials} trials x {args.new_tokens} new tokens, "
        f"batch {args.batch}, sampling; {ended_early}/{len(requests)} responses end before the last token"
    )
    print()
    table = [("tokens/s", "min", "median", "")]
    table += [(name, f"{min(rates[name]):.1f}", f"{median[name]:.1f}", "") for name in measures]
    table += [
        ("engine / transformers generate", "", f"{median['engine'] / median['transformers generate']:.2f}x", ""),
        ("responses identical, engine vs generate", "", f"{same}/{len(requests)}", ""),
        ("batched / one case at a time", "", f"{median['engine, same cases'] / median['one case at a time']:.2f}x", "target >= 4x"),
        ("PASTA / unsteered", "", f"{median['engine, PASTA'] / median['engine']:.2f}", "target >= 0.9"),
        ("peak RSS", "", f"{maxrss_mib:.0f} MiB", ""),
    ]
    if torch.cuda.is_available():
        table.append(("peak CUDA memory allocated", "", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", ""))
    print_table(table)


if __name__ == "__main__":
    main()

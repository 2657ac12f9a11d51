"""A running batch (one stream through the batch's slots) against planned batches of the same rows, forward by forward.

The work: every built-in prompt × ``--trials`` unsteered responses × ``--new-tokens`` new tokens, sampled, in one
process and one loaded model. ``batches``: the rows grouped by prompt length into batches of ``--slots`` (what a run
plans on a CPU); ``stream``: all rows as one stream, longest prompts first, ``--slots`` of them decoding at once and
queued rows entering as others end (``pytest_steer.engine.stream``). For each: wall time; the prefill forwards (their
count, time and token rows, padding included); the decode steps (their count, time, mean rows and mean keys); and the
rest (sampling, dropping rows, the engine's set-up). Rounds alternate the order of the two. The CPU flags it ran on are
printed first.

    python benchmarks/bench_stream.py [--trials 3] [--new-tokens 64] [--slots 64] [--dtype float32] [--rounds 1]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from tables import print_table  # benchmarks/tables.py, beside this script

from pytest_steer.engine.generation import Engine
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.model.loading import load_model
from pytest_steer.model.numerics import cpu_features
from pytest_steer.plan.batches import batch_indices
from pytest_steer.plan.cases import build_cases, steering_configs
from pytest_steer.plan.data import load_rows


class ForwardLog:
    """Each model forward: (rows, tokens per row, keys seen, seconds)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forwards: list[tuple[int, int, int, float]] = []
        self._started = 0.0
        self._shape = (0, 0, 0)
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)

    def _before(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        self._shape = (ids.shape[0], ids.shape[1], -1 if mask is None else mask.shape[-1])
        self._started = time.perf_counter()

    def _after(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        self.forwards.append((*self._shape, time.perf_counter() - self._started))


def run(engine: Engine, log: ForwardLog, requests: list[GenerationRequest], mode: str, slots: int) -> dict[str, float]:
    lengths = engine.prompt_lengths([request.prompt for request in requests])
    log.forwards.clear()
    start = time.perf_counter()
    if mode == "stream":
        generations = engine.generate([requests[i] for i in batch_indices(lengths, len(requests))[0]], slots=slots)
    else:
        generations = [g for batch in batch_indices(lengths, slots) for g in engine.generate([requests[i] for i in batch])]
    wall = time.perf_counter() - start
    prefills = [f for f in log.forwards if f[1] > 1]
    steps = [f for f in log.forwards if f[1] == 1]
    return {
        "wall s": wall,
        "new tokens": sum(g.n_new_tokens for g in generations),
        "prefill forwards": len(prefills),
        "prefill s": sum(f[3] for f in prefills),
        "prefill token rows": sum(f[0] * f[1] for f in prefills),
        "decode steps": len(steps),
        "decode s": sum(f[3] for f in steps),
        "decode ms per step": 1e3 * sum(f[3] for f in steps) / max(1, len(steps)),
        "mean rows per step": sum(f[0] for f in steps) / max(1, len(steps)),
        "mean keys per step": sum(f[2] for f in steps) / max(1, len(steps)),
        "rest s": wall - sum(f[3] for f in log.forwards),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"CPU flags found: {', '.join(cpu_features()) or 'none of those looked for'}; torch threads {torch.get_num_threads()}")
    cases = build_cases(load_rows("builtin"), steering_configs([]), trials=args.trials, seed=0, highlight="auto")
    requests = [GenerationRequest(case.row.prompt, case.seed) for case in cases]
    engine = Engine(load_model(device="cpu", dtype=args.dtype), GenerationSettings(max_new_tokens=args.new_tokens))
    log = ForwardLog(engine.loaded.model)
    engine.generate(requests[:4])  # warm-up
    results: dict[str, list[dict[str, float]]] = {"batches": [], "stream": []}
    for round_index in range(args.rounds):
        for mode in ("batches", "stream") if round_index % 2 == 0 else ("stream", "batches"):
            results[mode].append(run(engine, log, requests, mode, args.slots))
            print(f"round {round_index + 1}, {mode}: {results[mode][-1]['wall s']:.1f} s", flush=True)
    print(f"\n{len(requests)} rows ({args.trials} per built-in prompt) x {args.new_tokens} new tokens, {args.dtype}, {args.slots} slots")
    table = [("", *(f"{mode} r{i + 1}" for mode in results for i in range(args.rounds)))]
    for name in results["batches"][0]:
        table.append((name, *(f"{r[name]:.4g}" for mode in results for r in results[mode])))
    print_table(table)


if __name__ == "__main__":
    main()

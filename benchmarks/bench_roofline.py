"""Decode speed against the decode step's roofline bound, in float32 and bfloat16, measured in one run.

The bound of one decode step at ``--batch`` rows is what no engine can beat on this
machine: every weight matmul of the step (each decoder layer's projections and the
lm_head, at the step's own shapes and dtype, with the weights in whichever layout
multiplies fastest here: as held, as an (in, out) matrix, or packed in oneDNN's layout)
plus one read of the step's KV cache at the measured memory bandwidth. The KV cache read
is that of the batch's mean context: the prompts' own tokens (no padding) plus half the
new tokens.

The engine generates the first ``--prompts`` prompts of the built-in suite (one sampled
response each, the run's seeds, ``--new-tokens`` new tokens) in one batch; its decode
tokens/s leaves out the prefill (the prompt's forward, timed by a forward hook) and counts
every token after each row's first. Rounds alternate the dtypes' order and measure the
bound and the engine back to back; minimum and median over rounds are printed, and the
ratios are of each round's own figures. The bound of the two plain layouts alone (what it was
before the engine could pack its weights) is printed beside it. The engine's linear layers
run as a run would decide here (``--linear auto``), or as ``--linear`` says.

    python benchmarks/bench_roofline.py [--prompts 64] [--batch 64] [--new-tokens 64] [--rounds 3] [--dtypes float32,bfloat16]
        [--compile MODE] [--linear auto|plain|packed]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from tables import print_table  # benchmarks/tables.py, beside this script
from torch import nn

from pytest_steer.engine.generation import Engine
from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
from pytest_steer.model.kernels import PACKED_ROWS, measured_kernel, packed_linear
from pytest_steer.model.loading import LoadedModel, load_model
from pytest_steer.plan.cases import build_cases, steering_configs
from pytest_steer.plan.data import load_rows
from pytest_steer.plan.option_values import COMPILE_MODES


def best_seconds(work: Callable[[], Any], repeats: int) -> float:
    work()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def memory_bandwidth(repeats: int = 5) -> float:
    """Bytes per second read by a reduction over a buffer far larger than the caches."""
    buffer = torch.ones(128 * 2**20, dtype=torch.float32)  # 512 MiB
    return buffer.numel() * buffer.element_size() / best_seconds(buffer.sum, repeats)


def step_linears(model: nn.Module) -> list[nn.Linear]:
    """Every weight matmul of one decode step: the decoder layers' linear layers and the lm_head."""
    layers = [module for module in model.base_model.layers.modules() if isinstance(module, nn.Linear)]
    return [*layers, model.get_output_embeddings()]


def matmul_seconds(model: nn.Module, rows: int, repeats: int) -> dict[str, float]:
    """The step's matmuls, with each weight as the model holds it, as a contiguous (in, out) matrix, and packed once in
    oneDNN's layout (``pytest_steer.model.kernels``; where this torch build has oneDNN)."""
    linears = step_linears(model)
    dtype = linears[0].weight.dtype
    inputs = [torch.randn(rows, linear.in_features, dtype=dtype) for linear in linears]
    as_held = [linear.weight for linear in linears]
    in_out = [linear.weight.t().contiguous() for linear in linears]
    layouts = {
        "as held": lambda: [nn.functional.linear(x, w) for x, w in zip(inputs, as_held)],
        "(in, out)": lambda: [x @ w for x, w in zip(inputs, in_out)],
    }
    if torch.backends.mkldnn.is_available():
        packed = [torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACKED_ROWS) for w in as_held]
        layouts["packed"] = lambda: [packed_linear(x, w, None) for x, w in zip(inputs, packed)]
    with torch.inference_mode():
        return {name: best_seconds(work, repeats) for name, work in layouts.items()}


def kv_bytes_per_token(model: nn.Module) -> int:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize


class PrefillTimer:
    """Wall time of the model's forwards over more than one token (prefills)."""

    def __init__(self, model: nn.Module) -> None:
        self.seconds = 0.0
        self._start: float | None = None
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._start = time.perf_counter() if kwargs["input_ids"].shape[1] > 1 else None

    def _after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start


def engine_rates(engine: Engine, timer: PrefillTimer, requests: list[GenerationRequest]) -> tuple[float, float]:
    """(decode tokens/s, whole-batch tokens/s) of one batch."""
    timer.seconds = 0.0
    start = time.perf_counter()
    generations = engine.generate(requests)
    seconds = time.perf_counter() - start
    tokens = sum(g.n_new_tokens for g in generations)
    return (tokens - len(generations)) / (seconds - timer.seconds), tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="rows of the bound's step (the engine runs all prompts in one batch)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timings per bound measure and round (best kept)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--attn", default="eager", choices=("eager", "sdpa"))
    parser.add_argument(
        "--linear", default="auto", choices=("auto", "plain", "packed"),
        help="the engine's linear layers: as a run decides here (auto), plain, or on packed weights",
    )  # fmt: skip
    parser.add_argument("--compile", choices=COMPILE_MODES, help="the engine as under --steer-compile MODE (compiled before the rounds)")
    args = parser.parse_args()

    dtypes = args.dtypes.split(",")
    rows = load_rows("builtin")[: args.prompts]
    cases = build_cases(rows, steering_configs([]), trials=1, seed=0, highlight="auto")
    requests = [GenerationRequest(case.row.prompt, case.seed) for case in cases]
    engines: dict[str, tuple[Engine, PrefillTimer]] = {}
    for dtype in dtypes:
        packed = args.linear == "packed" or (args.linear == "auto" and measured_kernel(dtype).packed and not args.compile)
        print(f"{dtype} linear layers: {'packed' if packed else 'plain'} ({measured_kernel(dtype).reason})")
        loaded: LoadedModel = load_model(device="cpu", dtype=dtype, attn_implementation=args.attn, packed_linears=packed)
        engine = Engine(loaded, GenerationSettings(max_new_tokens=args.new_tokens), compile_mode=args.compile)
        engines[dtype] = (engine, PrefillTimer(loaded.model))
        engine.generate(requests if args.compile else requests[:4])  # warm-up; compiled: at the measured batch's shape
    prompt_tokens = engines[dtypes[0]][0].prompt_lengths([r.prompt for r in requests])
    mean_context = statistics.mean(prompt_tokens) + args.new_tokens / 2

    figures: dict[str, dict[str, list[float]]] = {dtype: {} for dtype in dtypes}

    def record(dtype: str, name: str, value: float) -> None:
        figures[dtype].setdefault(name, []).append(value)

    for round_index in range(args.rounds):
        bandwidth = memory_bandwidth()
        for dtype in dtypes if round_index % 2 == 0 else dtypes[::-1]:
            engine, timer = engines[dtype]
            model = engine.loaded.model
            matmuls = matmul_seconds(model, args.batch, args.repeats)
            kv_seconds = args.batch * mean_context * kv_bytes_per_token(model) / bandwidth
            bound = args.batch / (min(matmuls.values()) + kv_seconds)
            plain_bound = args.batch / (min(matmuls["as held"], matmuls["(in, out)"]) + kv_seconds)
            decode_rate, whole_rate = engine_rates(engine, timer, requests)
            record(dtype, "bandwidth GB/s", bandwidth / 1e9)
            record(dtype, "matmuls as held, ms/step", matmuls["as held"] * 1e3)
            record(dtype, "matmuls (in, out), ms/step", matmuls["(in, out)"] * 1e3)
            if "packed" in matmuls:
                record(dtype, "matmuls packed, ms/step", matmuls["packed"] * 1e3)
            record(dtype, "KV read, ms/step", kv_seconds * 1e3)
            record(dtype, "bound tokens/s", bound)
            record(dtype, "decode tokens/s", decode_rate)
            record(dtype, "engine with prefill tokens/s", whole_rate)
            record(dtype, "engine decode / bound", decode_rate / bound)
            record(dtype, "bound of the plain layouts tokens/s", plain_bound)
            record(dtype, "engine decode / plain layouts' bound", decode_rate / plain_bound)
        latest = (f"{d} bound {figures[d]['bound tokens/s'][-1]:.0f}, engine {figures[d]['decode tokens/s'][-1]:.0f}" for d in dtypes)
        print(f"round {round_index + 1}: " + "; ".join(latest), flush=True)

    print()
    compiled = f", compiled: {args.compile}" if args.compile else ""
    print(
        f"embedded SmolLM2-135M ({args.attn}{compiled}), torch threads {torch.get_num_threads()}; {len(requests)} builtin prompts "
        f"(mean {statistics.mean(prompt_tokens):.1f} tokens) x {args.new_tokens} new tokens, sampling, one batch; "
        f"bound at {args.batch} rows, mean context {mean_context:.1f}; {args.rounds} rounds"
    )
    table = [("", "min", "median")]
    for dtype in dtypes:
        table += [(f"{dtype}: {name}", f"{min(values):.3g}", f"{statistics.median(values):.3g}") for name, values in figures[dtype].items()]
    if "float32" in figures and "bfloat16" in figures:
        per_round = [b / f for b, f in zip(figures["bfloat16"]["decode tokens/s"], figures["float32"]["decode tokens/s"])]
        table.append(("engine decode bfloat16 / float32", f"{min(per_round):.2f}", f"{statistics.median(per_round):.2f}"))
        bound_ratio = [b / f for b, f in zip(figures["bfloat16"]["bound tokens/s"], figures["float32"]["bound tokens/s"])]
        table.append(("bound bfloat16 / float32", f"{min(bound_ratio):.2f}", f"{statistics.median(bound_ratio):.2f}"))
    print_table(table)


if __name__ == "__main__":
    main()

"""Throughput of PASTA-steered generation against unsteered generation, same model and batch.

Defaults: the embedded SmolLM2-135M-Instruct, batch 16, 64 new tokens, eager attention,
greedy decoding, all heads of the default middle layers, alpha 10, include. Both run on
the steering twins of the attention kernels, as the engine runs every config, so the
ratio is what the bias costs. Steered timings
include locating the spans (PASTA.apply). Each round times both, in alternating order, so
that drift in machine load hits both alike; the best round of each is reported, and the median
of the per-round ratios and the tokens per CPU-second of this process as checks on noise
from other processes.

    python benchmarks/bench_steering.py [--batch 16] [--new-tokens 64] [--attn eager] [--rounds 4] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pytest_steer.model.loading import load_model
from pytest_steer.steering import PASTA, default_head_layers
from pytest_steer.steering.pasta.attention import steerable_kernels

INSTRUCTIONS = [
    "Answer in all capital letters.",
    "Do not use any commas in your response.",
    "Wrap your entire response in double quotation marks.",
    "End your response with the exact phrase: Is there anything else I can help with?",
    "Your response must contain at least three bullet points.",
    "Write at most fifty words.",
    "Highlight at least two sections with markdown, i.e. *highlighted section*.",
    "Answer in lowercase letters only, no capitals.",
]
TASKS = [
    "Describe a walk along a rocky coastline at dawn.",
    "Explain how a bicycle gear system works.",
    "Give advice to someone starting to learn the piano.",
    "Summarize why bees matter for farming.",
    "Write a short note inviting neighbours to a garden party.",
    "Describe the taste of a ripe mango to someone who never had one.",
    "Explain what a leap year is.",
    "Suggest a plan for a rainy Sunday afternoon.",
]


def prompts(batch: int) -> tuple[list[str], list[list[str]]]:
    contents, substrings = [], []
    for index in range(batch):
        instruction = INSTRUCTIONS[index % len(INSTRUCTIONS)]
        contents.append(f"{TASKS[index % len(TASKS)]} {instruction}")
        substrings.append([instruction])
    return contents, substrings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(name="embedded", device="cpu", dtype="float32", attn_implementation=args.attn)
    model, tokenizer = loaded.model, loaded.tokenizer
    contents, substrings = prompts(args.batch)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True) for c in contents]
    encoding = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    input_ids, attention_mask = encoding["input_ids"], encoding["attention_mask"]
    pasta = PASTA(head_config=default_head_layers(model.config.num_hidden_layers), alpha=args.alpha)

    def generate(new_tokens: int) -> torch.Tensor:
        with torch.no_grad():
            return model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )

    def unsteered(new_tokens: int) -> torch.Tensor:
        with steerable_kernels(model):  # the kernels steered batches run on, as the engine runs the baseline: the ratio is the bias's cost
            return generate(new_tokens)

    def steered(new_tokens: int) -> torch.Tensor:
        with pasta.apply(model, tokenizer, input_ids, attention_mask, substrings, texts=texts):
            return generate(new_tokens)

    unsteered(4), steered(4)  # warm-up
    runs = {"unsteered": unsteered, "steered": steered}
    tokens = args.batch * args.new_tokens
    speeds: dict[str, list[float]] = {"unsteered": [], "steered": []}
    cpu_speeds: dict[str, list[float]] = {"unsteered": [], "steered": []}
    outputs = {}
    for round_index in range(args.rounds):
        order = ("unsteered", "steered") if round_index % 2 == 0 else ("steered", "unsteered")
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[name] = runs[name](args.new_tokens)
            speeds[name].append(tokens / (time.perf_counter() - wall))
            cpu_speeds[name].append(tokens / (time.process_time() - cpu))
    best = {name: max(values) for name, values in speeds.items()}
    cpu_best = {name: max(values) for name, values in cpu_speeds.items()}
    paired = statistics.median(s / u for s, u in zip(speeds["steered"], speeds["unsteered"]))

    changed = (outputs["steered"] != outputs["unsteered"]).any(dim=1).sum().item()
    print(f"model: {loaded.fingerprint.name}, layers {model.config.num_hidden_layers}, torch threads {torch.get_num_threads()}")
    print(
        f"batch {args.batch}, prompt length {input_ids.shape[1]}, {args.new_tokens} new tokens, {args.attn}, greedy, "
        f"{pasta!r}, best of {args.rounds} rounds"
    )
    print(f"unsteered: {best['unsteered']:.1f} tokens/s")
    print(f"steered:   {best['steered']:.1f} tokens/s")
    print(f"ratio steered/unsteered: {best['steered'] / best['unsteered']:.3f} (median of per-round ratios {paired:.3f})")
    # Other processes on the machine distort wall-clock figures; CPU time of this process much less so.
    print(
        f"per CPU-second: unsteered {cpu_best['unsteered']:.1f}, steered {cpu_best['steered']:.1f} tokens, "
        f"ratio {cpu_best['steered'] / cpu_best['unsteered']:.3f}"
    )
    print(f"rows whose greedy output steering changed: {changed}/{args.batch}")


if __name__ == "__main__":
    main()

"""Time strict and loose IFEval scoring of the 541 published GPT-4 responses.

Usage: python benchmarks/bench_ifeval.py [REFERENCE_DIR]

REFERENCE_DIR holds input_data.jsonl and gpt4_responses.jsonl; by default
$STEER_IFEVAL_REFERENCE_DIR, else ../shared/ifeval beside the repository.
Prints the import time, a cold pass (first use: tokenizer parameters and
language profiles are loaded) and warm passes with the per-text caches emptied,
so every sentence split and language detection is computed again.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WARM_PASSES = 5


def _reference_dir(argv: list[str]) -> Path:
    if argv:
        return Path(argv[0])
    override = os.environ.get("STEER_IFEVAL_REFERENCE_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "ifeval"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv: list[str]) -> int:
    directory = _reference_dir(argv)
    if not (directory / "input_data.jsonl").is_file():
        print(f"no IFEval reference data in {directory}; pass its folder as the first argument", file=sys.stderr)
        return 2
    inputs = _jsonl(directory / "input_data.jsonl")
    responses = {str(row["key"]): row["response"] for row in _jsonl(directory / "gpt4_responses.jsonl")}
    cases = [(row["prompt"], responses[str(row["key"])], row["instruction_id_list"], row["kwargs"]) for row in inputs]
    instructions = sum(len(case[2]) for case in cases)

    sys.path.insert(0, str(REPO_ROOT))
    started = time.perf_counter()
    from pytest_steer.ifeval import evaluate, text

    imported = time.perf_counter() - started

    def run_pass() -> float:
        begin = time.perf_counter()
        for case in cases:
            evaluate(*case)
        return time.perf_counter() - begin

    cold = run_pass()
    warm = []
    for _ in range(WARM_PASSES):
        for cache in (text.sentences, text.word_tokens, text.detect_language):
            cache.cache_clear()
        warm.append(run_pass())
    median = statistics.median(warm)

    print(f"IFEval scoring, strict and loose: {len(cases)} responses, {instructions} instructions")
    print(f"import pytest_steer.ifeval: {imported:.3f} s")
    print(f"cold pass (loads tokenizer and language profiles): {cold:.3f} s, {len(cases) / cold:.0f} responses/s")
    print(
        f"warm pass, caches emptied (median of {WARM_PASSES}): {median:.3f} s, "
        f"{len(cases) / median:.0f} responses/s (best {min(warm):.3f} s)"
    )
    print(f"total, import and cold pass: {imported + cold:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Hand-made case records and the RunResults built from them: no model needed."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from pytest_steer.run.results import RunResults
from pytest_steer.stats.gates import evaluate_gates

INSTRUCTION_IDS = (
    "detectable_format:title",
    "keywords:forbidden_words",
    "language:response_language",
    "startend:end_checker",
)
ALPHAS = (None, 5.0, 10.0, 30.0)
HOSTILE_RESPONSE = '<script>alert("x")</script> & </pre><b>bold</b>'
GATES = (
    "strict_prompt_accuracy >= 0.05",
    "alpha=10: strict_prompt_accuracy - baseline >= 0.5",
)


def config_name(alpha: float | None) -> str:
    return "baseline" if alpha is None else f"alpha{alpha:g}"


def make_records(n_prompts: int = 12, trials: int = 2, seed: int = 7) -> list[dict[str, Any]]:
    """Steering raises following up to alpha 10 and lowers quality; one case errored."""
    rng = random.Random(seed)
    records = []
    for alpha in ALPHAS:
        strength = 0.0 if alpha is None else min(alpha, 10.0) / 10.0
        for p in range(n_prompts):
            key = f"p{p:03d}"
            ids = [INSTRUCTION_IDS[p % 4]] + ([INSTRUCTION_IDS[(p + 1) % 4]] if p % 3 == 0 else [])
            for trial in range(trials):
                strict = [rng.random() < 0.35 + 0.4 * strength for _ in ids]
                loose = [s or rng.random() < 0.3 for s in strict]
                error = "generation failed: RuntimeError: out of memory" if (alpha == 30.0 and p == 5 and trial == 1) else None
                records.append(
                    {
                        "key": key,
                        "config": config_name(alpha),
                        "alpha": alpha,
                        "trial": trial,
                        "seed": 1000 + 10 * p + trial,
                        "prompt": f"Prompt {key}: write about <topic> & include a title.",
                        "response": HOSTILE_RESPONSE if (p == 0 and trial == 0) else f"{config_name(alpha)} answer {p}.{trial}",
                        "instruction_id_list": ids,
                        "strict": [] if error else strict,
                        "loose": [] if error else loose,
                        "follow_all_strict": False if error else all(strict),
                        "follow_all_loose": False if error else all(loose),
                        "quality": None if error else -1.4 - (alpha or 0) / 20 + rng.uniform(-0.3, 0.3),
                        "n_new_tokens": 0 if error else 40 + p,
                        "missing_spans": [],
                        "cached": False,
                        "error": error,
                        "model": {"name": "tiny-test-model", "revision": "sha256:abc", "dtype": "float32", "attn_implementation": "eager"},
                    }
                )
    return records


def make_run(n_prompts: int = 12, trials: int = 2, time: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    return {
        "model": {"name": "tiny-test-model", "revision": "sha256:abc", "dtype": "float32", "attn_implementation": "eager"},
        "dataset": {"source": "builtin", "split": "train", "limit": None, "n_prompts": n_prompts},
        "generation": {"max_new_tokens": 64, "greedy": False, "temperature": 0.7, "top_p": 1.0, "trials": trials, "seed": 0},
        "steering": {
            config_name(alpha): {
                "method": None if alpha is None else "pasta",
                "params": {} if alpha is None else {"alpha": alpha, "heads": None, "scale_position": "include"},
            }
            for alpha in ALPHAS
        },
        "versions": {"pytest-steer": "0.1.0"},
        "git_commit": "0123abc",
        "time": time,
    }


def make_results(records: list[dict[str, Any]] | None = None) -> RunResults:
    records = make_records() if records is None else records
    results = RunResults.from_records(make_run(), records, seed=0, min_prompts=1)
    results = replace(results, gates=evaluate_gates(GATES, results.aggregates, max_errors=1, min_prompts=1))
    return results


def make_method_results() -> RunResults:
    """Baseline, PASTA, emphasis (which rewrites the prompt) and a registered method, with a highlight PASTA could not find."""
    records = []
    for record in make_records(n_prompts=4, trials=1):
        if record["config"] not in ("baseline", "alpha10"):
            continue
        highlights = [f"include a title for {record['key']}"]
        records.append(
            record | {"method": "pasta" if record["alpha"] else None, "prepared_prompt": record["prompt"], "highlights": highlights}
        )
        if record["config"] == "alpha10":
            if record["key"] == "p001":
                records[-1]["missing_spans"] = highlights
            prepared = record["prompt"].replace("include a title", "INCLUDE A TITLE")
            records.append(records[-1] | {"config": "emphasis", "alpha": None, "method": "emphasis", "prepared_prompt": prepared})
            records.append(records[-1] | {"config": "myvec", "method": "myvec", "prepared_prompt": record["prompt"], "missing_spans": []})
    run = make_run(n_prompts=4, trials=1)
    run["steering"] = {
        name: run["steering"].get(name, {"method": name, "params": {}}) for name in ("baseline", "alpha10", "emphasis", "myvec")
    }
    return RunResults.from_records(run, records, seed=0)

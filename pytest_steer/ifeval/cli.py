"""Score responses that already exist, the way IFEval's own evaluation script does.

``python -m pytest_steer.ifeval INPUT.jsonl RESPONSES.jsonl [--out VERDICTS.jsonl]``

INPUT rows carry ``prompt``, ``instruction_id_list``, ``kwargs`` and usually
``key``; RESPONSES rows carry ``response`` and either ``key`` or ``prompt``.
A response is joined to its input by ``key`` when it has one, else by the exact
prompt text. The command prints prompt- and instruction-level accuracy, strict
and loose, and the accuracy of each instruction id; ``--out`` writes one verdict
line per scored input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pytest_steer.ifeval.driver import Evaluation, evaluate
from pytest_steer.store.jsonl import JsonLinesError, read_json_lines


class ScoringInputError(ValueError):
    """An input or response file cannot be scored as given."""


@dataclass(frozen=True)
class ScoredPrompt:
    row: dict[str, Any]
    evaluation: Evaluation


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        yield from read_json_lines(path)
    except OSError as error:
        raise ScoringInputError(f"cannot read {path}: {error.strerror}") from None
    except JsonLinesError as error:
        raise ScoringInputError(str(error)) from None


def _key(value: Any) -> str | None:
    return None if value is None else str(value)


def read_inputs(path: Path) -> list[dict[str, Any]]:
    """The prompts with their instructions, checked for the fields scoring needs."""
    rows = []
    for number, row in _read_jsonl(path):
        for name in ("prompt", "instruction_id_list", "kwargs"):
            if name not in row:
                raise ScoringInputError(f"{path}:{number}: missing field {name!r}")
        if not isinstance(row["prompt"], str):
            raise ScoringInputError(f"{path}:{number}: 'prompt' must be a string")
        rows.append(row)
    if not rows:
        raise ScoringInputError(f"{path}: no input rows")
    return rows


def join_responses(inputs: list[dict[str, Any]], path: Path) -> dict[int, str]:
    """Map each input's position to its response; raise for responses that match no input."""
    by_key = {_key(row.get("key")): index for index, row in enumerate(inputs) if row.get("key") is not None}
    by_prompt: dict[str, int] = {}
    for index, row in enumerate(inputs):
        by_prompt.setdefault(row["prompt"], index)
    joined: dict[int, str] = {}
    for number, row in _read_jsonl(path):
        response = row.get("response")
        if not isinstance(response, str):
            raise ScoringInputError(f"{path}:{number}: 'response' must be a string, got {response!r}")
        key = _key(row.get("key"))
        if key is not None:
            index = by_key.get(key)
            label = f"key {key!r}"
        elif isinstance(row.get("prompt"), str):
            index = by_prompt.get(row["prompt"])
            label = f"prompt {_clip(row['prompt'])!r}"
        else:
            raise ScoringInputError(f"{path}:{number}: a response row needs a 'key' or a 'prompt' to join it")
        if index is None:
            raise ScoringInputError(f"{path}:{number}: response for {label} matches no input row")
        if index in joined:
            raise ScoringInputError(f"{path}:{number}: second response for {label}")
        joined[index] = response
    return joined


def score(inputs: list[dict[str, Any]], responses: dict[int, str]) -> list[ScoredPrompt]:
    """Evaluate every input that has a response, in input order."""
    scored = []
    for index, row in enumerate(inputs):
        if index not in responses:
            continue
        try:
            evaluation = evaluate(row["prompt"], responses[index], row["instruction_id_list"], row["kwargs"])
        except ValueError as error:  # InstructionError included
            where = f"key {row['key']!r}" if row.get("key") is not None else f"prompt {_clip(row['prompt'])!r}"
            raise ScoringInputError(f"input row for {where}: {error}") from None
        scored.append(ScoredPrompt(row, evaluation))
    return scored


def verdict_record(scored: ScoredPrompt) -> dict[str, Any]:
    """One output line, with the fields of IFEval's verdict files."""
    identity = {"key": scored.row["key"]} if scored.row.get("key") is not None else {"prompt": scored.row["prompt"]}
    evaluation = scored.evaluation
    return {
        **identity,
        "instruction_id_list": evaluation.instruction_id_list,
        "follow_instruction_list_strict": evaluation.strict,
        "follow_instruction_list_loose": evaluation.loose,
        "follow_all_instructions_strict": evaluation.follow_all_strict,
        "follow_all_instructions_loose": evaluation.follow_all_loose,
    }


def _ratio(correct: int, total: int) -> float:
    return correct / total if total else float("nan")


def write_report(scored: list[ScoredPrompt], out: TextIO) -> None:
    """Prompt- and instruction-level accuracy, then accuracy per category and per id."""
    prompts = len(scored)
    prompt_strict = sum(item.evaluation.follow_all_strict for item in scored)
    prompt_loose = sum(item.evaluation.follow_all_loose for item in scored)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for item in scored:
        evaluation = item.evaluation
        for instruction_id, strict, loose in zip(evaluation.instruction_id_list, evaluation.strict, evaluation.loose, strict=True):
            for name in (instruction_id.split(":")[0], instruction_id):
                counts[name][0] += 1
                counts[name][1] += strict
                counts[name][2] += loose
    ids = sorted(name for name in counts if ":" in name)
    instructions = sum(counts[name][0] for name in ids)
    instruction_strict = sum(counts[name][1] for name in ids)
    instruction_loose = sum(counts[name][2] for name in ids)

    width = max([len(name) for name in counts] + [len("instruction-level")])

    def line(name: str, total: int, strict: int, loose: int) -> None:
        out.write(f"{name:<{width}} {total:>5} {_ratio(strict, total):>7.4f} {_ratio(loose, total):>7.4f}\n")

    out.write(f"scored {prompts} prompts, {instructions} instructions\n\n")
    out.write(f"{'':<{width}} {'n':>5} {'strict':>7} {'loose':>7}\n")
    line("prompt-level", prompts, prompt_strict, prompt_loose)
    line("instruction-level", instructions, instruction_strict, instruction_loose)
    for group in (sorted(name for name in counts if ":" not in name), ids):
        out.write("\n")
        for name in group:
            line(name, *counts[name])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_steer.ifeval",
        description="Score existing responses against IFEval instructions (strict and loose).",
    )
    parser.add_argument("inputs", type=Path, help="JSONL with key, prompt, instruction_id_list, kwargs")
    parser.add_argument("responses", type=Path, help="JSONL with response and key (or prompt)")
    parser.add_argument("--out", type=Path, help="write one verdict line per scored prompt to this JSONL file")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score only the inputs that have a response instead of failing on the others",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 scored, 2 unusable input)."""
    options = _parser().parse_args(argv)
    try:
        inputs = read_inputs(options.inputs)
        responses = join_responses(inputs, options.responses)
        missing = [index for index in range(len(inputs)) if index not in responses]
        if missing and not options.allow_missing:
            first = inputs[missing[0]]
            label = f"key {first['key']!r}" if first.get("key") is not None else f"prompt {_clip(first['prompt'])!r}"
            raise ScoringInputError(
                f"{len(missing)} of {len(inputs)} inputs have no response (first: {label}); "
                "pass --allow-missing to score only the answered ones"
            )
        if not responses:
            raise ScoringInputError(f"{options.responses}: no responses")
        scored = score(inputs, responses)
    except ScoringInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options.out is not None:
        try:
            with options.out.open("w", encoding="utf-8") as handle:
                for item in scored:
                    handle.write(json.dumps(verdict_record(item)) + "\n")
        except OSError as error:
            print(f"error: cannot write {options.out}: {error.strerror}", file=sys.stderr)
            return 2
    write_report(scored, sys.stdout)
    if missing:
        print(f"\n{len(missing)} inputs without a response were not scored", file=sys.stdout)
    return 0

"""Instruction vectors (Stolfo et al., ICLR 2025): which (prompt, instruction) differences a run measures, and
each prompt's leave-one-out vector built from them.

For each instruction of a prompt, the difference is measured between the prompt and the prompt with that
instruction's text (the ``instructions`` column of Split-IFEval rows) cut out. A prompt is steered by the sum,
over its instruction ids, of the mean difference of the run's *other* prompts with that id; an id no other
prompt holds adds nothing, so a prompt none of whose ids another prompt holds runs unsteered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pytest_steer.model.prompts import render_prompt
from pytest_steer.steering.vectors import vector_digest

# Why instruction vectors leave a prompt unsteered, as case records and report lines say it.
NO_SHARED_ID = "the prompt shares no instruction id with another prompt of the run (instruction vectors are leave-one-out)"
NO_INSTRUCTION_TEXT = "the prompt holds none of its instruction texts (the 'instructions' column), so no instruction is measured"


@dataclass(frozen=True)
class InstructionMeasure:
    """One (prompt, instruction) pair: the prompt, and the prompt with that instruction's text cut out."""

    prompt: str
    instruction_id: str
    without: str


def instruction_measures(prompts: Sequence[Any]) -> list[InstructionMeasure]:
    """Every (prompt, instruction) of rows whose instruction text occurs in the prompt, once per distinct prompt."""
    measures, seen = [], set()
    for row in prompts:
        if row.prompt in seen or not row.instructions:
            continue
        seen.add(row.prompt)
        for instruction_id, text in zip(row.instruction_id_list, row.instructions):
            without = remove_text(row.prompt, text)
            if without is not None:
                measures.append(InstructionMeasure(row.prompt, instruction_id, without))
    return measures


def unsteered_prompts(prompts: Sequence[Any]) -> dict[str, str]:
    """Key -> why, of the prompt rows that instruction vectors leave unsteered (see ``InstructionVectors.vector``)."""
    measures = instruction_measures(prompts)
    holders = Counter(instruction_id for instruction_id, _ in {(m.instruction_id, m.prompt) for m in measures})
    measured: dict[str, set[str]] = {}
    for measure in measures:
        measured.setdefault(measure.prompt, set()).add(measure.instruction_id)
    unsteered = {}
    for row in prompts:
        ids = measured.get(row.prompt)
        if not ids:
            unsteered[row.key] = NO_INSTRUCTION_TEXT
        elif all(holders[instruction_id] < 2 for instruction_id in ids):
            unsteered[row.key] = NO_SHARED_ID
    return unsteered


def remove_text(prompt: str, text: str) -> str | None:
    """``prompt`` with the first occurrence of ``text`` cut out and the seam's spaces joined; None if absent or nothing is left."""
    start = prompt.find(text) if text.strip() else -1
    if start < 0:
        return None
    before, after = prompt[:start].rstrip(" \t"), prompt[start + len(text) :].lstrip(" \t")
    seam = " " if before and after and not before.endswith("\n") and not after.startswith("\n") else ""
    left = (before + seam + after).strip()
    return left or None


class InstructionVectors:
    """Leave-one-out instruction vectors of a run, from each (prompt, instruction) difference."""

    def __init__(self, measures: Sequence[InstructionMeasure], differences: torch.Tensor) -> None:
        self.measures = list(measures)
        self.differences = differences
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        for measure, difference in zip(self.measures, differences):
            self._sums[measure.instruction_id] = self._sums.get(measure.instruction_id, 0) + difference
            self._counts[measure.instruction_id] = self._counts.get(measure.instruction_id, 0) + 1
        # per prompt and instruction id: the sum and number of the prompt's own differences (an id may repeat in a prompt)
        self._by_prompt: dict[str, dict[str, tuple[torch.Tensor, int]]] = {}
        for measure, difference in zip(self.measures, differences):
            own = self._by_prompt.setdefault(measure.prompt, {})
            total, count = own.get(measure.instruction_id, (0, 0))
            own[measure.instruction_id] = (total + difference, count + 1)

    def vector(self, prompt: str) -> torch.Tensor | None:
        """The prompt's vector: per instruction id, the mean difference of the other prompts; None when it has none."""
        total = None
        for instruction_id, (own, count) in self._by_prompt.get(prompt, {}).items():
            others = self._counts[instruction_id] - count
            if others:
                mean = (self._sums[instruction_id] - own) / others
                total = mean if total is None else total + mean
        return total

    def for_texts(self, texts: Sequence[str], tokenizer: Any, hidden: int) -> torch.Tensor:
        """(rows, hidden): each templated text's vector, zeros for a text that is none of the run's prompts."""

        rendered = {render_prompt(tokenizer, prompt): prompt for prompt in self._by_prompt}
        vectors = torch.zeros(len(texts), hidden)
        for row, text in enumerate(texts):
            prompt = rendered.get(text)
            vector = None if prompt is None else self.vector(prompt)
            if vector is not None:
                vectors[row] = vector
        return vectors

    def digests(self) -> dict[str, str]:
        """Per instruction id, a digest of the differences its leave-one-out vectors are built from."""
        return {
            instruction_id: vector_digest(torch.cat([total, torch.tensor([float(self._counts[instruction_id])])]))
            for instruction_id, total in sorted(self._sums.items())
        }

"""Strict and loose verdicts for one response, as IFEval's evaluation defines them.

Strict: an instruction is followed when the response is not blank and its
checker accepts the response.

Loose: followed when the checker accepts any of eight variants of the response:
the response itself, without its first line, without its last line, without
both, and each of those four with every ``*`` removed. Variants that are blank
do not count. Loose forgives a preamble ("Sure, here is ...:"), a closing remark
and markdown emphasis.

Results are kept by position: a prompt may carry the same instruction id twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_steer.ifeval.checkers import Checker, build_checker


@dataclass(frozen=True)
class Evaluation:
    """Verdicts for one response, one entry per instruction, in the prompt's order."""

    instruction_id_list: list[str]
    strict: list[bool]
    loose: list[bool]
    reasons: list[str | None] = field(default_factory=list)
    """Why each instruction is not strictly followed ("<id>: <what was found>"); None where it is."""

    @property
    def follow_all_strict(self) -> bool:
        return all(self.strict)

    @property
    def follow_all_loose(self) -> bool:
        return all(self.loose)

    def failures(self) -> list[str]:
        """The reasons of the instructions not strictly followed, in order."""
        return [reason for reason in self.reasons if reason is not None]


def loose_variants(response: str) -> list[str]:
    """The distinct non-blank variants of ``response`` that loose scoring tries, itself first."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    variants: list[str] = []
    for candidate in trimmed + [variant.replace("*", "") for variant in trimmed]:
        if candidate.strip() and candidate not in variants:
            variants.append(candidate)
    return variants


def _reason(instruction_id: str, checker: Checker, response: str) -> str:
    if not response.strip():
        return f"{instruction_id}: the response is empty"
    return f"{instruction_id}: {checker.explain(response)}"


def evaluate(
    prompt: str,
    response: str,
    instruction_id_list: Sequence[str],
    kwargs: Sequence[Mapping[str, Any] | None] | None,
) -> Evaluation:
    """Score ``response`` to ``prompt`` against each instruction, strictly and loosely.

    ``kwargs`` holds one argument mapping per instruction (``None`` entries and
    ``None`` values mean "not given"); ``None`` for the whole list means no
    arguments at all. Raises InstructionError for an unknown id or a missing or
    invalid argument, before any checking is done.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a string, got {type(response).__name__}")
    ids = list(instruction_id_list)
    arguments = [None] * len(ids) if kwargs is None else list(kwargs)
    if len(arguments) != len(ids):
        raise ValueError(
            f"instruction_id_list has {len(ids)} entries but kwargs has {len(arguments)}; give one kwargs mapping per instruction"
        )
    checkers = [build_checker(instruction_id, args, prompt) for instruction_id, args in zip(ids, arguments, strict=True)]

    variants = loose_variants(response)
    not_blank = bool(response.strip())
    strict: list[bool] = []
    loose: list[bool] = []
    reasons: list[str | None] = []
    for instruction_id, checker in zip(ids, checkers, strict=True):
        followed = not_blank and checker.check(response)
        strict.append(followed)
        # variants[0] is the response itself when it is not blank: already checked above.
        loose.append(followed or any(checker.check(variant) for variant in variants[1:]))
        reasons.append(None if followed else _reason(instruction_id, checker, response))
    return Evaluation(instruction_id_list=ids, strict=strict, loose=loose, reasons=reasons)


def describe_failure(instruction_id: str, kwargs: Mapping[str, Any] | None, response: str, prompt: str = "") -> str:
    """A one-line account of how ``response`` fares on one instruction under strict scoring.

    For example ``"detectable_format:number_bullet_lists: found 2 bullet points,
    expected exactly 3"``. ``prompt`` matters only for ``combination:repeat_prompt``
    without a ``prompt_to_repeat`` argument.
    """
    checker = build_checker(instruction_id, kwargs, prompt)
    if response.strip() and checker.check(response):
        return f"{instruction_id}: followed"
    return _reason(instruction_id, checker, response)

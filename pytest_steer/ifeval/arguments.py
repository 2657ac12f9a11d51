"""Checking and normalizing the arguments (``kwargs``) of one instruction.

Datasets deliver arguments loosely: ``None`` for arguments an instruction does
not use (Split-IFEval and the Hugging Face copy of IFEval carry every argument
name on every row), floats where whole numbers are meant (``2.0``), lists as
tuples or arrays. Parsers here accept those forms and turn them into plain
``int``, ``str`` and ``list[str]`` values, or raise :class:`InstructionError`
naming the instruction, the argument and what would be accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

LESS_THAN = "less than"
AT_LEAST = "at least"
RELATIONS = (LESS_THAN, AT_LEAST)


class InstructionError(ValueError):
    """An instruction id is unknown, or one of its arguments is missing or invalid."""

    def __init__(self, instruction_id: str, message: str, argument: str | None = None) -> None:
        self.instruction_id = instruction_id
        self.argument = argument
        where = instruction_id if argument is None else f"{instruction_id}, argument {argument!r}"
        super().__init__(f"{where}: {message}")


class ArgumentValueError(ValueError):
    """A single argument value is invalid; the caller adds which instruction and argument."""


Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Arg:
    """One argument of an instruction: its name, its parser, and whether it must be given."""

    name: str
    parse: Parser
    required: bool = True


def parse_count(value: Any) -> int:
    """A whole number >= 0; integral floats such as 2.0 are accepted."""
    if isinstance(value, bool):
        raise ArgumentValueError(f"must be a whole number >= 0, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif hasattr(value, "item") and not isinstance(value, str):
        # numpy scalars, as pandas and parquet readers deliver them
        return parse_count(value.item())
    else:
        raise ArgumentValueError(f"must be a whole number >= 0, got {value!r}")
    if number < 0:
        raise ArgumentValueError(f"must be a whole number >= 0, got {value!r}")
    return number


def parse_positive(value: Any) -> int:
    """A whole number >= 1."""
    number = parse_count(value)
    if number < 1:
        raise ArgumentValueError(f"must be a whole number >= 1, got {value!r}")
    return number


def parse_relation(value: Any) -> str:
    """One of the comparison phrases IFEval uses."""
    if value not in RELATIONS:
        raise ArgumentValueError(f"must be one of {list(RELATIONS)}, got {value!r}")
    return str(value)


def parse_stripped(value: Any) -> str:
    """A string with surrounding whitespace removed; must not end up empty."""
    if not isinstance(value, str) or not value.strip():
        raise ArgumentValueError(f"must be a non-empty string, got {value!r}")
    return value.strip()


def parse_stripped_pattern(value: Any) -> str:
    """A stripped string that the checker uses as a regular expression."""
    text = parse_stripped(value)
    _require_regex(text)
    return text


def parse_pattern_list(value: Any) -> list[str]:
    """A non-empty list of non-empty strings, each used as a regular expression."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentValueError(f"must be a list of strings, got {value!r}")
    items = list(value)
    if not items:
        raise ArgumentValueError("must list at least one word")
    parsed = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ArgumentValueError(f"must hold non-empty strings only, got {item!r}")
        _require_regex(item)
        parsed.append(str(item))
    return parsed


def parse_letter(value: Any) -> str:
    """A single non-space character, lower-cased (any character, as in the newest IFEval)."""
    if not isinstance(value, str) or len(value) != 1 or value.isspace():
        raise ArgumentValueError(f"must be a single non-space character, got {value!r}")
    return value.lower()


def parse_word(value: Any) -> str:
    """A single word without spaces, lower-cased."""
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise ArgumentValueError(f"must be a single word without spaces, got {value!r}")
    return value.lower()


def _require_regex(text: str) -> None:
    try:
        re.compile(text)
    except re.error as error:
        raise ArgumentValueError(f"is matched as a regular expression (as IFEval does) but {text!r} is not a valid one: {error}") from None


def normalize(instruction_id: str, spec: tuple[Arg, ...], kwargs: Any) -> dict[str, Any]:
    """Check ``kwargs`` against ``spec``; return the parsed arguments that were given."""
    if kwargs is None:
        kwargs = {}
    if not hasattr(kwargs, "items"):
        raise InstructionError(instruction_id, f"kwargs must be a mapping, got {type(kwargs).__name__}")
    given = {name: value for name, value in kwargs.items() if value is not None}
    known = {arg.name for arg in spec}
    unknown = sorted(str(name) for name in given if name not in known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise InstructionError(
            instruction_id,
            f"unknown argument(s) {unknown}; this instruction accepts: {accepted}",
            argument=unknown[0],
        )
    parsed: dict[str, Any] = {}
    for arg in spec:
        if arg.name not in given:
            if arg.required:
                raise InstructionError(instruction_id, "is required but missing (or None)", argument=arg.name)
            continue
        try:
            parsed[arg.name] = arg.parse(given[arg.name])
        except ArgumentValueError as error:
            raise InstructionError(instruction_id, str(error), argument=arg.name) from None
    return parsed

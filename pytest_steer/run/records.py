"""The record of one case: what travels from a worker to the controller and into reports."""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from pytest_steer.plan.cases import Case, case_id


@dataclass(frozen=True)
class CaseRecord:
    key: str
    config: str
    alpha: float | None
    trial: int
    seed: int
    prompt: str
    response: str
    instruction_id_list: list[str]
    strict: list[bool]
    loose: list[bool]
    follow_all_strict: bool
    follow_all_loose: bool
    quality: float | None
    n_new_tokens: int
    missing_spans: list[str]
    cached: bool
    error: str | None = None
    model: dict[str, str] | None = None  # the ModelFingerprint of the weights that answered
    method: str | None = None  # the config's steering method; None for the unsteered baseline
    prepared_prompt: str | None = None  # the prompt after the method's prepare (before the chat template); None if unknown
    highlights: list[str] = field(default_factory=list)  # the spans the case asked steering to emphasize
    device: str | None = None  # the torch device of the process that ran the case
    unsteered: str | None = None  # why the method left this prompt unsteered, known before generation; None if it steered it

    @classmethod
    def failed_case(cls, case: Case, error: str, response: str = "") -> CaseRecord:
        """``failed`` for a planned case."""
        row = case.row
        return cls.failed(
            key=row.key,
            config=case.config.name,
            alpha=case.config.alpha,
            trial=case.trial,
            error=error,
            seed=case.seed,
            prompt=row.prompt,
            instruction_id_list=list(row.instruction_id_list),
            response=response,
            method=case.config.method,
        )

    @classmethod
    def failed(
        cls,
        *,
        key: str,
        config: str,
        alpha: float | None,
        trial: int,
        error: str,
        seed: int = 0,
        prompt: str = "",
        instruction_id_list: list[str] | None = None,
        response: str = "",
        method: str | None = None,
    ) -> CaseRecord:
        """A case without verdicts: an error, counted apart and never as a miss."""
        return cls(
            key=key,
            config=config,
            alpha=alpha,
            trial=trial,
            seed=seed,
            prompt=prompt,
            response=response,
            instruction_id_list=list(instruction_id_list or []),
            strict=[],
            loose=[],
            follow_all_strict=False,
            follow_all_loose=False,
            quality=None,
            n_new_tokens=0,
            missing_spans=[],
            cached=False,
            error=error,
            method=method,
        )

    @property
    def ran_unsteered(self) -> bool:
        return ran_unsteered(self.to_dict())

    @property
    def case_id(self) -> str:
        return case_id(self.key, self.config, self.trial)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseRecord:
        """The record of a parsed JSON object; ``RecordError`` naming each field that is missing or of the wrong type."""
        problems = record_problems(data)
        if problems:
            raise RecordError("; ".join(problems))
        return cls(**{name: data[name] for name in _field_types() if name in data})


def record_case_id(record: Mapping[str, Any]) -> str:
    """The case id of a record in its dict form (as JSON carries it)."""
    return case_id(record["key"], record["config"], record["trial"])


class RecordError(ValueError):
    """A case record whose fields are missing or not of the types a CaseRecord holds."""


@functools.cache
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(CaseRecord)
    return {f.name: hints[f.name] for f in fields(CaseRecord)}


def record_problems(data: Any) -> list[str]:
    """What keeps ``data`` (a parsed JSON value) from being a case record, one entry per field; empty when it is one.

    Keys beyond the record's fields (the test's node id, the worker) are allowed.
    """
    if not isinstance(data, Mapping):
        return [f"a case record is a JSON object of fields, not {_show(data)}"]
    required = {f.name for f in fields(CaseRecord) if f.default is MISSING and f.default_factory is MISSING}
    problems = []
    for name, hint in _field_types().items():
        if name not in data:
            if name in required:
                problems.append(f"field {name!r} is missing; expected {_expected(hint)}")
        elif not _matches(data[name], hint):
            problems.append(f"field {name!r} is {_show(data[name])}; expected {_expected(hint)}")
    if problems or data.get("error") is not None:  # an errored case has no verdicts
        return problems
    ids, strict, loose = data["instruction_id_list"], data["strict"], data["loose"]
    if not ids:
        problems.append("field 'instruction_id_list' is empty; expected the case's instruction ids (at least one)")
    elif len(strict) != len(ids) or len(loose) != len(ids):
        problems.append(
            f"fields 'strict' and 'loose' hold {len(strict)} and {len(loose)} verdicts; expected one per instruction of "
            f"'instruction_id_list' ({len(ids)})"
        )
    return problems


def _matches(value: Any, hint: Any) -> bool:
    """Whether a parsed JSON value has the type ``hint`` of a CaseRecord field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


_NAMES = {
    str: ("a string", "strings"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
}


def _expected(hint: Any) -> str:
    """A field's type in JSON's words: ``a number or null``, ``a list of strings``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in args)
    if origin is list:
        return f"a list of {_NAMES[args[0]][1]}"
    if origin is dict:
        return f"an object of {_NAMES[args[1]][1]}"
    if hint is type(None):
        return "null"
    return _NAMES[hint][0]


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


NO_HIGHLIGHT_FOUND = "steering found none of its highlights in the prompt (missing_spans in cases.jsonl)"


def ran_unsteered(record: Mapping[str, Any]) -> bool:
    """A steered case that ran as the baseline does: its method left its prompt unsteered, or found none of its highlights."""
    return unsteered_reason(record) is not None


def unsteered_reason(record: Mapping[str, Any]) -> str | None:
    """Why a steered case ran as the baseline does; None when it was steered (or is the baseline, or an error)."""
    if not record.get("method") or record.get("error"):
        return None
    if record.get("unsteered"):
        return str(record["unsteered"])
    highlights = record.get("highlights") or []
    missing = set(record.get("missing_spans") or [])
    return NO_HIGHLIGHT_FOUND if highlights and all(h in missing for h in highlights) else None

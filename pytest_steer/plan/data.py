"""Prompt datasets: the built-in sample suite, hub datasets and local files, and selection.

Rows follow Split-IFEval's columns: ``key``, ``prompt``, ``instructions`` (optional: the
text of each instruction, as it appears in the prompt), ``instruction_id_list``,
``kwargs``. Every row is validated when it is loaded, so a bad row fails collection with
its position and field instead of failing halfway through a run.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_steer.ifeval import INSTRUCTION_IDS, InstructionError, unknown_instruction_id, validate_kwargs
from pytest_steer.store.hub import hub_offline, hub_reachable, looks_like_hub_id, split_revision
from pytest_steer.store.jsonl import JsonLinesError, read_json_lines

BUILTIN = "builtin"
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
REQUIRED_COLUMNS = ("prompt", "instruction_id_list", "kwargs")
HIGHLIGHTS = ("auto", "instructions", "last-sentence", "prompt")


class DatasetError(ValueError):
    """The dataset or the selection cannot be used; the message names the row, field and fix."""


@dataclass(frozen=True)
class PromptRow:
    key: str
    prompt: str
    instructions: tuple[str, ...]
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Selection:
    single_instruction: bool = False
    instruction_ids: tuple[str, ...] = ()
    per_instruction: int | None = None
    sample_seed: int = 0
    limit: int | None = None


def builtin_path() -> Path:
    return Path(str(resources.files("pytest_steer") / "builtin" / "ifeval_sample.jsonl"))


def load_rows(source: str, *, split: str | None = None) -> list[PromptRow]:
    """Load and validate every row of ``source`` (``builtin``, a hub id or a local file)."""
    if source == BUILTIN:
        return parse_rows(*_read_local(builtin_path()), origin="the built-in sample suite")
    path = Path(source).expanduser()
    if path.exists():
        if path.suffix not in LOCAL_FORMATS:
            raise DatasetError(f"dataset {source!r}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
        return parse_rows(*_read_local(path), origin=str(path))
    if looks_like_hub_id(source):
        return parse_rows(_read_hub(source, split), origin=source)
    raise DatasetError(f"dataset {source!r} is not {BUILTIN!r}, an existing file, or a hub dataset id (org/name); check the path")


def _read_local(path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The file's records, and for JSON Lines the line number of each."""
    try:
        if path.suffix == ".jsonl":  # the common case reads without pandas (a third of a second to import)
            numbered = list(read_json_lines(path))
            return [row for _, row in numbered], [number for number, _ in numbered]
        import pandas as pd  # why: a third of a second to import, and only tables other than .jsonl need it

        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return (data if isinstance(data, list) else pd.DataFrame(data).to_dict("records")), None
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
        return frame.to_dict("records"), None
    except JsonLinesError as exc:  # already names the file and the line
        raise DatasetError(str(exc)) from exc
    except (ValueError, OSError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _read_hub(source: str, split: str | None) -> list[dict[str, Any]]:
    repo, revision = split_revision(source)
    if not hub_offline() and not hub_reachable():
        raise DatasetError(
            f"dataset {source!r}: the Hugging Face Hub cannot be reached (no network?). Offline alternatives: "
            f"the dataset {BUILTIN!r} (the built-in sample suite), a local .jsonl/.json/.parquet/.csv file, "
            "or HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache"
        )
    import datasets  # why: loads pyarrow and more, and only hub datasets need it

    try:
        dataset = datasets.load_dataset(repo, revision=revision, split=split or "train")
    except Exception as exc:  # datasets raises many types; the message is what matters
        raise DatasetError(f"cannot load hub dataset {source!r} (split {split or 'train'!r}): {exc}") from exc
    return [dict(row) for row in dataset]


def _as_list(value: Any, field: str, where: str) -> list[Any]:
    if isinstance(value, str):  # csv cells hold JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: field {field!r} is text but not JSON ({exc})") from exc
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DatasetError(f"{where}: field {field!r} must be a list, got {type(value).__name__}")
    return list(value)


def _kwargs_object(value: Any, where: str) -> dict[str, Any]:
    """One instruction's arguments: a JSON object, or its text (csv cells); empty text and null mean none."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            example = '{"relation": "at least"}'
            raise DatasetError(f"{where}: is text but not JSON ({exc}); give a JSON object such as {example}") from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        got = f"{type(value).__name__} {value!r:.60}"
        raise DatasetError(f"{where}: must be a JSON object of the instruction's arguments (or null), got {got}")
    return dict(value)


def parse_rows(records: Sequence[Mapping[str, Any]], lines: Sequence[int] | None = None, *, origin: str) -> list[PromptRow]:
    """Validate every record; ``lines`` (JSON Lines files) puts each row's line number in the errors."""

    if not records:
        raise DatasetError(f"{origin} has no rows")
    missing = [column for column in REQUIRED_COLUMNS if column not in records[0]]
    if missing:
        raise DatasetError(
            f"{origin} lacks the column(s) {missing}; rows need {list(REQUIRED_COLUMNS)} "
            "(plus optional 'key' and 'instructions'), as in Split-IFEval or IFEval"
        )
    rows, seen = [], set()
    for index, record in enumerate(records):
        key = str(record.get("key", index))
        where = f"{origin} row {index} (key {key}{'' if lines is None else f', line {lines[index]}'})"
        if key in seen:
            raise DatasetError(f"{where}: duplicate key; every row needs a unique 'key'")
        seen.add(key)
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DatasetError(f"{where}: field 'prompt' must be a non-empty string")
        ids = [str(i) for i in _as_list(record.get("instruction_id_list"), "instruction_id_list", where)]
        raw_kwargs = _as_list(record.get("kwargs"), "kwargs", where)
        if len(raw_kwargs) != len(ids):
            raise DatasetError(f"{where}: 'kwargs' has {len(raw_kwargs)} entries for {len(ids)} instruction ids")
        kwargs = []
        for position, (instruction_id, arguments) in enumerate(zip(ids, raw_kwargs)):
            if instruction_id not in INSTRUCTION_IDS:
                problem = unknown_instruction_id(instruction_id, INSTRUCTION_IDS)
                raise DatasetError(f"{where}: field 'instruction_id_list'[{position}]: {problem}")
            arguments = _kwargs_object(arguments, f"{where}: field 'kwargs'[{position}] ({instruction_id})")
            try:
                kwargs.append(validate_kwargs(instruction_id, arguments))
            except InstructionError as exc:
                raise DatasetError(f"{where}: field 'kwargs'[{position}] ({instruction_id}): {exc}") from exc
        instructions = record.get("instructions")
        texts = [str(t) for t in _as_list(instructions, "instructions", where)] if instructions is not None else []
        if texts and len(texts) != len(ids):
            raise DatasetError(f"{where}: 'instructions' has {len(texts)} entries for {len(ids)} instruction ids")
        rows.append(PromptRow(key, prompt, tuple(texts), tuple(ids), tuple(kwargs)))
    return rows


def select(rows: Sequence[PromptRow], selection: Selection, *, origin: str = "the dataset") -> list[PromptRow]:
    """Apply the reference study's sampling: single-instruction prompts, chosen ids, N per id, limit."""
    chosen = list(rows)
    if selection.single_instruction:
        chosen = [row for row in chosen if len(row.instruction_id_list) == 1]
    if selection.instruction_ids:
        wanted = set(selection.instruction_ids)
        chosen = [row for row in chosen if wanted & set(row.instruction_id_list)]
    if selection.per_instruction is not None:
        chosen = _sample_per_instruction(chosen, selection)
    if selection.limit is not None:
        chosen = chosen[: selection.limit]
    if not chosen:
        raise DatasetError(
            f"the selection from {origin} is empty ({_describe(selection)}); "
            "relax single_instruction, instruction_ids, per_instruction or limit"
        )
    return chosen


def _sample_per_instruction(rows: list[PromptRow], selection: Selection) -> list[PromptRow]:
    ids = selection.instruction_ids or tuple(sorted({i for row in rows for i in row.instruction_id_list}))
    picked: set[str] = set()
    for instruction_id in ids:
        candidates = sorted(row.key for row in rows if instruction_id in row.instruction_id_list and row.key not in picked)
        rng = random.Random(f"{selection.sample_seed}:{instruction_id}")  # private stream: order-independent
        picked.update(rng.sample(candidates, min(selection.per_instruction or 0, len(candidates))))
    return [row for row in rows if row.key in picked]


def _describe(selection: Selection) -> str:
    parts = [f"{name}={value!r}" for name, value in vars(selection).items() if value not in (False, (), None)]
    return ", ".join(parts) or "no filters"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def highlights(row: PromptRow, mode: str) -> tuple[str, ...]:
    """The prompt spans that PASTA emphasizes for ``row`` under ``--steer-highlight``."""
    if mode in ("auto", "instructions") and row.instructions:
        return row.instructions
    if mode == "instructions":
        raise DatasetError(f"row {row.key} has no 'instructions' column; highlight last-sentence or prompt for plain IFEval data")
    if mode == "prompt":
        return (row.prompt,)
    sentences = [s for s in _SENTENCE_END.split(row.prompt.strip()) if s.strip()]
    return (sentences[-1],)

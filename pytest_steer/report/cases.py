"""``cases.jsonl``: every case record, one JSON object per line, in (config, key, trial) order.

A line is ``CaseRecord.to_dict()`` plus the test's node id: prompt key, config, alpha, trial, seed, prompt,
response, the instruction ids with their strict and loose verdicts by position, quality,
error and the model fingerprint. Reading a file back validates every line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_steer.run.records import record_problems
from pytest_steer.store.atomic import atomic_open
from pytest_steer.store.jsonl import read_json_lines


def write_cases(records: Iterable[dict[str, Any]], path: Path) -> Path:
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_cases(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``; a malformed line raises ``ValueError`` naming the file, the line and each bad field."""
    path = Path(path)
    records = []
    for number, record in read_json_lines(path):  # JsonLinesError names the line that is not one JSON object
        problems = record_problems(record)  # extra keys such as the test node id are kept
        if problems:
            raise ValueError(f"{path}:{number}: not a case record: {'; '.join(problems)}; was it written by pytest-steer?")
        records.append(record)
    return records


def embedded_cases(path: Path, entries: Any) -> list[dict[str, Any]]:
    """The ``cases`` a standalone results.json holds (``--steer-json``); a malformed entry raises ``ValueError``
    naming the file, the entry's index and each bad field."""
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'cases' is not a list of case records; was it written by pytest-steer?")
    for number, record in enumerate(entries):
        problems = record_problems(record)
        if problems:
            raise ValueError(f"{path}: cases[{number}] is not a case record: {'; '.join(problems)}; was it written by pytest-steer?")
    return entries

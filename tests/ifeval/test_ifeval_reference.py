"""Agreement with the reference IFEval implementation on the published GPT-4 responses.

The data lives beside the project (``../shared/ifeval``, or $STEER_IFEVAL_REFERENCE_DIR)
and is not part of it; without it these tests skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.ifeval import evaluate, validate_kwargs
from pytest_steer.ifeval.cli import main

# reference_data is the conftest fixture: a ReferenceData with inputs, responses and
# verdicts keyed by prompt key, and the directory they were read from.


def test_every_reference_verdict_is_reproduced(reference_data: Any) -> None:
    disagreements = []
    verdicts = 0
    for key, row in reference_data.inputs.items():
        result = evaluate(row["prompt"], reference_data.responses[key], row["instruction_id_list"], row["kwargs"])
        expected = reference_data.verdicts[key]
        assert result.instruction_id_list == expected["instruction_id_list"]
        for mode, got, want in (
            ("strict", result.strict, expected["follow_instruction_list_strict"]),
            ("loose", result.loose, expected["follow_instruction_list_loose"]),
        ):
            verdicts += len(want)
            for position, (instruction_id, mine, theirs) in enumerate(zip(row["instruction_id_list"], got, want, strict=True)):
                if mine != theirs:
                    disagreements.append(f"key {key} #{position} {instruction_id} {mode}: {mine} != {theirs}")
        assert result.follow_all_strict == expected["follow_all_instructions_strict"]
        assert result.follow_all_loose == expected["follow_all_instructions_loose"]
    assert verdicts == 1668
    assert disagreements == []


def test_every_reference_kwargs_validates(reference_data: Any) -> None:
    for row in reference_data.inputs.values():
        for instruction_id, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
            normalized = validate_kwargs(instruction_id, kwargs)
            assert set(normalized) <= set(kwargs)


def test_command_writes_the_reference_verdict_file(reference_data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "verdicts.jsonl"
    directory = reference_data.directory
    status = main([str(directory / "input_data.jsonl"), str(directory / "gpt4_responses.jsonl"), "--out", str(out)])
    assert status == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    with (directory / "gpt4_reference_verdicts.jsonl").open() as handle:
        expected = [json.loads(line) for line in handle]
    for row in expected:
        del row["rng_dependent_strict"], row["rng_dependent_loose"]
    assert written == expected
    report = capsys.readouterr().out
    assert "scored 541 prompts, 834 instructions" in report

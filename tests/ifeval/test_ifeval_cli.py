"""``python -m pytest_steer.ifeval``: scoring files of existing responses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.ifeval.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]

INPUTS = [
    {"key": 1, "prompt": "Say hi without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {
        "key": 2,
        "prompt": "Quote a title.",
        "instruction_id_list": ["startend:quotation", "detectable_format:title"],
        "kwargs": [{}, {}],
    },
]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    return _write(tmp_path / "inputs.jsonl", INPUTS)


def test_scores_responses_joined_by_key(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    responses = _write(
        tmp_path / "responses.jsonl",
        [{"key": "2", "response": '"<<Title>> here"'}, {"key": 1, "response": "Hi, there."}],
    )
    out = tmp_path / "verdicts.jsonl"
    assert main([str(inputs), str(responses), "--out", str(out)]) == 0
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert verdicts == [
        {
            "key": 1,
            "instruction_id_list": ["punctuation:no_comma"],
            "follow_instruction_list_strict": [False],
            "follow_instruction_list_loose": [False],
            "follow_all_instructions_strict": False,
            "follow_all_instructions_loose": False,
        },
        {
            "key": 2,
            "instruction_id_list": ["startend:quotation", "detectable_format:title"],
            "follow_instruction_list_strict": [True, True],
            "follow_instruction_list_loose": [True, True],
            "follow_all_instructions_strict": True,
            "follow_all_instructions_loose": True,
        },
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scored 2 prompts, 3 instructions"
    assert any(line.split() == ["prompt-level", "2", "0.5000", "0.5000"] for line in lines)
    assert any(line.split() == ["instruction-level", "3", "0.6667", "0.6667"] for line in lines)
    assert any(line.split() == ["punctuation:no_comma", "1", "0.0000", "0.0000"] for line in lines)
    assert any(line.split() == ["startend", "1", "1.0000", "1.0000"] for line in lines)


def test_joins_by_prompt_when_responses_have_no_key(inputs: Path, tmp_path: Path) -> None:
    responses = _write(
        tmp_path / "responses.jsonl",
        [{"prompt": "Say hi without commas.", "response": "Hi there."}, {"prompt": "Quote a title.", "response": "x"}],
    )
    out = tmp_path / "verdicts.jsonl"
    assert main([str(inputs), str(responses), "--out", str(out)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["follow_instruction_list_strict"] == [True]


@pytest.mark.parametrize(
    ("responses", "message"),
    [
        (
            [{"key": 1, "response": "a"}, {"key": 3, "response": "b"}],
            "responses.jsonl:2: response for key '3' matches no input row",
        ),
        ([{"key": 1, "response": "a"}, {"key": 1, "response": "b"}], "responses.jsonl:2: second response for key '1'"),
        ([{"prompt": "Unknown prompt", "response": "a"}], "response for prompt 'Unknown prompt' matches no input row"),
        ([{"key": 1, "response": None}], "responses.jsonl:1: 'response' must be a string"),
        ([{"response": "a"}], "needs a 'key' or a 'prompt'"),
        ([{"key": 1, "response": "a"}], "1 of 2 inputs have no response (first: key 2); pass --allow-missing"),
    ],
)
def test_unusable_responses_fail_with_a_clear_message(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], responses: list[dict[str, Any]], message: str
) -> None:
    path = _write(tmp_path / "responses.jsonl", responses)
    assert main([str(inputs), str(path)]) == 2
    assert message in capsys.readouterr().err


def test_allow_missing_scores_only_answered_inputs(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "responses.jsonl", [{"key": 1, "response": "Hi there."}])
    assert main([str(inputs), str(path), "--allow-missing"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scored 1 prompts, 1 instructions")
    assert "1 inputs without a response were not scored" in out


def test_invalid_json_and_bad_kwargs_are_reported_with_their_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"key": 1, "prompt": "p", "instruction_id_list": [], "kwargs": []}\n{not json\n')
    responses = _write(tmp_path / "responses.jsonl", [{"key": 1, "response": "a"}])
    assert main([str(broken), str(responses)]) == 2
    assert "broken.jsonl:2: not valid JSON" in capsys.readouterr().err

    bad = _write(
        tmp_path / "bad.jsonl",
        [{"key": 7, "prompt": "p", "instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "x"}]}],
    )
    responses = _write(tmp_path / "responses.jsonl", [{"key": 7, "response": "a"}])
    assert main([str(bad), str(responses)]) == 2
    error = capsys.readouterr().err
    assert "input row for key 7: keywords:frequency, argument 'frequency': is required but missing" in error


def test_module_runs_as_a_command(inputs: Path, tmp_path: Path) -> None:
    responses = _write(tmp_path / "responses.jsonl", [{"key": 1, "response": "a"}, {"key": 2, "response": "b"}])
    completed = subprocess.run(
        [sys.executable, "-m", "pytest_steer.ifeval", str(inputs), str(responses)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("scored 2 prompts, 3 instructions")
    missing = subprocess.run(
        [sys.executable, "-m", "pytest_steer.ifeval", str(inputs), str(tmp_path / "absent.jsonl")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr

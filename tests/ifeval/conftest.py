"""Fixtures for the IFEval checker tests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REFERENCE_DIR_VARIABLE = "STEER_IFEVAL_REFERENCE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ReferenceData:
    """IFEval's prompts, the published GPT-4 responses, and the reference verdicts, keyed by prompt key."""

    directory: Path
    inputs: dict[str, dict[str, Any]]
    responses: dict[str, str]
    verdicts: dict[str, dict[str, Any]]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def reference_data() -> ReferenceData:
    """The conformance data beside the project (``../shared/ifeval``) or at $STEER_IFEVAL_REFERENCE_DIR."""
    override = os.environ.get(REFERENCE_DIR_VARIABLE)
    directory = Path(override) if override else REPO_ROOT.parent / "shared" / "ifeval"
    if not directory.is_dir():
        if override:
            pytest.fail(f"{REFERENCE_DIR_VARIABLE}={override} is not a directory")
        pytest.skip(
            f"IFEval reference data not found at {directory}; set {REFERENCE_DIR_VARIABLE} "
            "to a folder holding input_data.jsonl, gpt4_responses.jsonl and gpt4_reference_verdicts.jsonl"
        )
    return ReferenceData(
        directory=directory,
        inputs={str(row["key"]): row for row in _jsonl(directory / "input_data.jsonl")},
        responses={str(row["key"]): row["response"] for row in _jsonl(directory / "gpt4_responses.jsonl")},
        verdicts={str(row["key"]): row for row in _jsonl(directory / "gpt4_reference_verdicts.jsonl")},
    )

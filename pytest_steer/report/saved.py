"""A saved report read back: ``results.json`` plus its case records."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_steer.report.cases import embedded_cases, read_cases
from pytest_steer.report.files import CASES_JSONL, RESULTS_JSON
from pytest_steer.report.json import read_results
from pytest_steer.run.results import RunResults


def results_path(location: Path) -> Path:
    """``location`` itself when it is a file, else the ``results.json`` inside it."""
    location = Path(location)
    path = location if location.is_file() else location / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_JSON} at {location}; pass a report directory (--steer-report-dir) or a results.json file")
    return path


def load_report(location: Path) -> RunResults:
    """The saved results with their case records: from ``cases.jsonl`` beside the file,
    else the file's own ``cases`` (a standalone ``--steer-json`` file), else none."""
    path = results_path(location)
    cases = path.parent / CASES_JSONL
    if cases.is_file():
        return read_results(path, read_cases(cases))
    try:
        own = json.loads(path.read_text()).get("cases")
    except (ValueError, AttributeError):  # not JSON, or not an object: read_results says so
        own = None
    return read_results(path, embedded_cases(path, own) if own is not None else None)

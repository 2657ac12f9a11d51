"""The report directory: every file output of a run, written from one :class:`RunResults`.

Default location: ``steer-report`` inside pytest's cache directory
(``<rootdir>/.pytest_cache/d/steer-report``). With the cache provider disabled
(``-p no:cacheprovider``) nothing is written into the project; the report goes to a
per-user, per-project folder under the system temporary directory instead.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from pytest_steer.report.cases import write_cases
from pytest_steer.report.json import write_results
from pytest_steer.report.summary_csv import write_summary_csv
from pytest_steer.results import RunResults

RESULTS_JSON = "results.json"
CASES_JSONL = "cases.jsonl"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
CACHE_SUBDIR = "steer-report"


def default_report_dir(config: Any) -> Path:
    """``steer-report`` in pytest's cache dir, or a temporary folder when the cache is off."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(CACHE_SUBDIR))
    root = Path(config.rootpath).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"pytest-steer-{_user()}" / f"{root.name}-{digest}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without a passwd entry
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def render_figures(results: RunResults) -> dict[str, bytes]:
    """PNG bytes of every figure, by name (matplotlib is imported only here)."""
    from pytest_steer.report.figures import (
        instruction_delta_figure,
        instruction_heatmap_figure,
        png_bytes,
        trade_off_figure,
    )

    return {
        "trade_off": png_bytes(trade_off_figure(results)),
        "instruction_heatmap": png_bytes(instruction_heatmap_figure(results)),
        "instruction_deltas": png_bytes(instruction_delta_figure(results)),
    }


def write_report(results: RunResults, directory: Path) -> list[Path]:
    """Write results.json, cases.jsonl, summary.csv, the figures and report.html; report.html first."""
    from pytest_steer.report.html import render_html

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures = render_figures(results)
    html_path = directory / REPORT_HTML
    html_path.write_text(render_html(results, figures), encoding="utf-8")
    written = [html_path]
    written.append(write_results(results, directory / RESULTS_JSON))
    written.append(write_cases(results.records, directory / CASES_JSONL))
    written.append(write_summary_csv(results, directory / SUMMARY_CSV))
    for name, png in figures.items():
        path = directory / f"{name}.png"
        path.write_bytes(png)
        written.append(path)
    return written

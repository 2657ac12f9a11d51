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
FIGURE_NAMES = ("trade_off", "instruction_heatmap", "instruction_deltas")
FIGURES_STAMP = ".figures.sha256"  # digest of what the figures in a report directory plot


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

    drawn = {
        "trade_off": png_bytes(trade_off_figure(results)),
        "instruction_heatmap": png_bytes(instruction_heatmap_figure(results)),
        "instruction_deltas": png_bytes(instruction_delta_figure(results)),
    }
    return {name: drawn[name] for name in FIGURE_NAMES}


def figures_digest(results: RunResults) -> str:
    """What the figures show: the aggregates, the title's fields, and the code and matplotlib that draw them."""
    from importlib import metadata

    from pytest_steer.cache import digest

    run = results.run
    return digest(
        {
            "aggregates": [a.to_dict(include_per_prompt=True) for a in results.aggregates],
            "title": [run.get("model"), run.get("dataset"), run.get("generation")],
            "code": hashlib.sha256((Path(__file__).parent / "figures.py").read_bytes()).hexdigest(),
            "matplotlib": metadata.version("matplotlib"),
        }
    )


def _figures(results: RunResults, directory: Path) -> tuple[dict[str, bytes], str]:
    """The figures and their digest; the PNGs already in ``directory`` when they show the same
    (a rerun from the response cache draws nothing, nor imports matplotlib)."""
    key = figures_digest(results)
    try:
        if (directory / FIGURES_STAMP).read_text() == key:
            return {name: (directory / f"{name}.png").read_bytes() for name in FIGURE_NAMES}, key
    except OSError:  # no earlier report here, or one of its figures is gone: draw them
        pass
    return render_figures(results), key


def write_report(results: RunResults, directory: Path) -> list[Path]:
    """Write results.json, cases.jsonl, summary.csv, the figures and report.html; report.html first."""
    from pytest_steer.report.html import render_html

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures, figures_key = _figures(results, directory)
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
    (directory / FIGURES_STAMP).write_text(figures_key)  # last: a stamp never names figures not written
    return written

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
import stat
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_steer.report.cases import write_cases
from pytest_steer.report.html import render_html
from pytest_steer.report.json import write_results
from pytest_steer.report.summary_csv import write_summary_csv
from pytest_steer.run.results import RunResults
from pytest_steer.store.atomic import write_bytes, write_text
from pytest_steer.store.responses import digest

RESULTS_JSON = "results.json"
CASES_JSONL = "cases.jsonl"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
CACHE_SUBDIR = "steer-report"
FIGURE_NAMES = ("trade_off", "instruction_heatmap", "instruction_deltas")
FIGURES_STAMP = ".figures.sha256"  # digest of what the figures in a report directory plot
# the code that draws the figures, part of their digest
FIGURE_SOURCES = ("plotting.py", "tradeoff_figure.py", "pareto_panel.py", "heatmap_figure.py", "deltas_figure.py")


class UnsafeReportDir(OSError):
    """The shared temporary directory holds a report folder this user cannot trust."""


def default_report_dir(config: Any) -> Path:
    """``steer-report`` in pytest's cache dir, or a private folder of this user under the
    temporary directory when the cache is off."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(CACHE_SUBDIR))
    root = Path(config.rootpath).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return private_dir(Path(tempfile.gettempdir()) / f"pytest-steer-{_user()}") / f"{root.name}-{digest}"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (mode 0700), created when missing.

    Anyone can create names in a shared temporary directory: an existing ``path`` that is
    a symbolic link, belongs to another user or can be written by others is refused, so a
    planted folder or link never receives the report.
    """
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif hasattr(os, "getuid") and info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & 0o022:
        problem = f"can be written by other users (mode {stat.S_IMODE(info.st_mode):o})"
    if problem is not None:
        raise UnsafeReportDir(
            f"{path} {problem}, so the default report folder is not safe to write into; "
            "pass --steer-report-dir DIR (or remove it, if it is yours)"
        )
    return path


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without a passwd entry
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def skipped_figures(results: RunResults) -> dict[str, str]:
    """Figures that would show nothing for these results, with the reason they are not drawn."""
    if any(results.instruction_deltas().values()):
        return {}
    return {"instruction_deltas": "no steered config shares an instruction id with the baseline, so there is no change to show"}


def figure_names(results: RunResults) -> list[str]:
    skipped = skipped_figures(results)
    return [name for name in FIGURE_NAMES if name not in skipped]


def render_figures(results: RunResults) -> dict[str, bytes]:
    """PNG bytes of every figure worth drawing, by name."""
    # why: matplotlib is imported only when a figure is drawn; a rerun that reuses its figures never loads it
    from pytest_steer.report.deltas_figure import instruction_delta_figure
    from pytest_steer.report.heatmap_figure import instruction_heatmap_figure
    from pytest_steer.report.plotting import png_bytes
    from pytest_steer.report.tradeoff_figure import trade_off_figure

    draw = {
        "trade_off": trade_off_figure,
        "instruction_heatmap": instruction_heatmap_figure,
        "instruction_deltas": instruction_delta_figure,
    }
    return {name: png_bytes(draw[name](results)) for name in figure_names(results)}


def figures_digest(results: RunResults) -> str:
    """What the figures show: the aggregates, the title's fields, and the code and matplotlib that draw them."""
    run = results.run
    return digest(
        {
            "aggregates": [a.to_dict(include_per_prompt=True) for a in results.aggregates],
            "title": [run.get("model"), run.get("dataset"), run.get("generation")],
            "min_prompts": results.min_prompts,
            "code": {name: hashlib.sha256((Path(__file__).parent / name).read_bytes()).hexdigest() for name in FIGURE_SOURCES},
            "matplotlib": metadata.version("matplotlib"),
        }
    )


def _figures(results: RunResults, directory: Path) -> tuple[dict[str, bytes], str]:
    """The figures and their digest; the PNGs already in ``directory`` when they show the same
    (a rerun from the response cache draws nothing, nor imports matplotlib)."""
    key = figures_digest(results)
    try:
        if (directory / FIGURES_STAMP).read_text() == key:
            return {name: (directory / f"{name}.png").read_bytes() for name in figure_names(results)}, key
    except OSError:  # no earlier report here, or one of its figures is gone: draw them
        pass
    return render_figures(results), key


def write_report(results: RunResults, directory: Path) -> list[Path]:
    """Write results.json, cases.jsonl, summary.csv, the figures and report.html; report.html first."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures, figures_key = _figures(results, directory)
    skipped = skipped_figures(results)
    written = [write_text(directory / REPORT_HTML, render_html(results, figures, skipped))]
    written.append(write_results(results, directory / RESULTS_JSON))
    written.append(write_cases(results.records, directory / CASES_JSONL))
    written.append(write_summary_csv(results, directory / SUMMARY_CSV))
    for name, png in figures.items():
        written.append(write_bytes(directory / f"{name}.png", png))
    for name in skipped:  # an earlier run's figure would contradict this report
        (directory / f"{name}.png").unlink(missing_ok=True)
    write_text(directory / FIGURES_STAMP, figures_key)  # last: a stamp never names figures not written
    return written

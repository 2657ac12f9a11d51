"""Every file a run writes: the report directory, --steer-json, --steer-summary-md and --steer-save.

Each output is written on its own: one that cannot be written (a read-only folder, a
full disk) costs only itself. Its failure is returned as one line naming the option and
the path, and the others are still written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.run.results import RunResults


@dataclass
class Written:
    paths: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    partial_apart: Path | None = None  # the full run's default report folder, which a partial selection left as it was

    def attempt(self, option: str, target: Path, write: Callable[[], list[Path] | Path]) -> None:
        try:
            written = write()
        except (OSError, ValueError) as exc:
            self.failures.append(f"{option} {target}: not written ({type(exc).__name__}: {exc})")
            return
        self.paths.extend(written if isinstance(written, list) else [written])


def write_outputs(results: RunResults, settings: SteerSettings, report_dir: Path | None, *, config: Any = None) -> Written:
    """``report_dir`` None: the default directory of pytest ``config`` (see :func:`default_report_dir`);
    a run of a partial pytest selection writes beside it, never over the full run's report."""
    # why: the writers load numpy and jinja2; the plugin imports this module in every run, steer tests or not
    from pytest_steer.report.files import REPORT_HTML, UnsafeReportDir, default_report_dir, write_report
    from pytest_steer.report.json import write_results
    from pytest_steer.report.markdown import write_markdown
    from pytest_steer.stats.baseline import save_run

    written = Written()
    partial = results.selection is not None and results.selection.partial
    if report_dir is None:
        try:
            report_dir = default_report_dir(config)
            if partial:
                written.partial_apart = report_dir
                report_dir = report_dir.with_name(f"{report_dir.name}-partial")
        except UnsafeReportDir as exc:
            written.failures.append(f"--steer-report-dir: not written ({exc})")
    if report_dir is not None:
        directory = Path(report_dir)
        written.attempt("--steer-report-dir", directory, lambda: write_report(results, directory))
    if settings.json:
        written.attempt("--steer-json", settings.json, lambda: write_results(results, settings.json, include_cases=True))
    if settings.summary_md:
        report = None if report_dir is None else Path(report_dir) / REPORT_HTML
        written.attempt("--steer-summary-md", settings.summary_md, lambda: write_markdown(results, settings.summary_md, report=report))
    if settings.save and partial:
        # a saved baseline stands for the whole suite: the next run compares every prompt with it
        stopped = results.selection.stopped if results.selection is not None else None
        why = f"the run ended early ({stopped}) and ran" if stopped else "pytest's selection ran"
        fix = "a run that runs every case" if stopped else "a run without -k/-m/--deselect/--lf"
        written.failures.append(f"--steer-save {settings.save}: not written ({why} only part of the cases; save a baseline from {fix})")
    elif settings.save:
        written.attempt("--steer-save", settings.save, lambda: save_run(results.run, results.aggregates, settings.save, results.choice))
    return written

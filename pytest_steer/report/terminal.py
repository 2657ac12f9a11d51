"""The trade-off table at the end of the terminal output, laid out for the terminal's width.

Each config gets a row of means with their 95% CIs; each steered config gets a second
row (``Δ``) with its paired difference from the baseline. On wide terminals a value and
its CI share one line; on narrower ones the CI goes under the value, and if even that
does not fit, the metric columns wrap into a second block that repeats the config column.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from pytest_steer.report.choice import choice_lines
from pytest_steer.report.table import (
    METRIC_TITLES,
    ConfigRow,
    config_rows,
    describe_run,
    format_ci,
    format_mean,
    unsteered_lines,
)
from pytest_steer.run.results import RunResults
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import METRICS

Cell = list[str]  # the lines of one table cell
Grid = list[list[Cell]]  # first row is the header
DELTA_LABEL = "  Δ"
GAP = "  "
MIN_WIDTH = 60
DEFAULT_WIDTH = 100


def _inline(interval: Interval | None, signed: bool) -> Cell:
    mean = format_mean(interval, signed=signed)
    ci = format_ci(interval)
    return [f"{mean} {ci}" if ci else mean]


def _stacked(interval: Interval | None, signed: bool) -> Cell:
    ci = format_ci(interval, compact=True)
    return [format_mean(interval, signed=signed)] + ([ci] if ci else [])


def build_grid(rows: list[ConfigRow], *, stacked: bool, split_headers: bool = False) -> Grid:
    """Header plus one row per config and one ``Δ`` row per steered config with deltas.

    ``stacked`` puts each CI under its mean and the error count under the prompt count;
    ``split_headers`` writes the metric titles over two lines. Both save width.
    """
    metric_cell = _stacked if stacked else _inline
    show_errors = any(row.n_errors for row in rows)
    errors_column = show_errors and not stacked
    show_verdicts = any(row.verdicts.text != "-" for row in rows)
    header: list[Cell] = [["config"], ["prompts"]]
    if errors_column:
        header.append(["errors"])
    header += [METRIC_TITLES[m].split(" ") if split_headers else [METRIC_TITLES[m]] for m in METRICS]
    if show_verdicts:
        header.append(["gates"])
    grid: Grid = [header]
    for row in rows:
        prompts = [str(row.n_prompts)] + ([f"{row.n_errors} err"] if show_errors and stacked and row.n_errors else [])
        cells: list[Cell] = [[row.name], prompts]
        if errors_column:
            cells.append([f"{row.n_errors}/{row.n_cases}"])
        cells += [metric_cell(row.values[m], False) for m in METRICS]
        if show_verdicts:
            cells.append([row.verdicts.text])
        grid.append(cells)
        if row.deltas:
            delta: list[Cell] = [[DELTA_LABEL], [""]] + ([[""]] if errors_column else [])
            delta += [metric_cell(row.deltas[m], True) for m in METRICS]
            grid.append(delta + ([[""]] if show_verdicts else []))
    return grid


def _column_widths(grid: Grid) -> list[int]:
    return [max(len(line) for row in grid for line in row[i]) for i in range(len(grid[0]))]


def _render(grid: Grid, columns: list[int], widths: list[int]) -> list[str]:
    lines = []
    for number, row in enumerate(grid):
        height = max(len(row[i]) for i in columns)
        for depth in range(height):
            parts = [(row[i][depth] if depth < len(row[i]) else "").ljust(widths[i]) for i in columns]
            lines.append(GAP.join(parts).rstrip())
        if number == 0:
            lines.append(GAP.join("-" * widths[i] for i in columns))
    return lines


def _total_width(widths: list[int], columns: list[int]) -> int:
    return sum(widths[i] for i in columns) + len(GAP) * (len(columns) - 1)


def render_table(results: RunResults, width: int) -> list[str]:
    """The table in the most readable layout that fits ``width`` columns."""
    rows = config_rows(results)
    for stacked in (False, True):
        grid = build_grid(rows, stacked=stacked, split_headers=stacked)
        widths = _column_widths(grid)
        every = list(range(len(widths)))
        if _total_width(widths, every) <= width:
            return _render(grid, every, widths)
    grid = build_grid(rows, stacked=True)  # blocks wrap anyway: keep each title on one line
    return _render_wrapped(grid, _column_widths(grid), width)


def _render_wrapped(grid: Grid, widths: list[int], width: int) -> list[str]:
    """Blocks of columns that fit ``width``, each repeating the config column."""
    blocks: list[list[int]] = []
    current = [0]
    for index in range(1, len(widths)):
        if _total_width(widths, current + [index]) > width and len(current) > 1:
            blocks.append(current)
            current = [0]
        current.append(index)
    blocks.append(current)
    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        lines += _render(grid, block, widths)
    return lines


def check_lines(results: RunResults) -> list[tuple[str, bool]]:
    """One line per gate and saved-run comparison, with whether it passed."""
    lines = [(f"{'PASS' if g.passed else 'FAIL'}  {g.message}", g.passed) for g in results.gates]
    lines += [(f"{'PASS' if c.passed else 'FAIL'}  {c.message}", c.passed) for c in results.comparisons]
    return lines


def undecided_lines(results: RunResults) -> list[str]:
    """One line per check that the run's selection left without a verdict."""
    undecided = results.selection.undecided if results.selection is not None else ()
    return [f"SKIP  {check.config or 'no config'}: {check.name}: {check.reason}" for check in undecided]


def checks_count_line(results: RunResults) -> str | None:
    """``gates: 2 passed, 1 failed, 1 not decided``; None for a run without checks."""
    checks, undecided = check_lines(results), undecided_lines(results)
    if not (checks or undecided):
        return None
    failed = sum(not passed for _, passed in checks)
    skipped = f", {len(undecided)} not decided" if undecided else ""
    return f"gates: {len(checks) - failed} passed, {failed} failed{skipped}"


def terminal_width(terminalreporter: Any) -> int:
    writer = getattr(terminalreporter, "_tw", None)
    return max(MIN_WIDTH, writer.fullwidth if writer is not None else DEFAULT_WIDTH)


def write_summary(terminalreporter: Any, results: RunResults) -> None:
    terminalreporter.section("steering trade-off", sep="=")
    for line in describe_run(results):
        terminalreporter.write_line(line)
    if results.n_cached:
        terminalreporter.write_line(
            f"responses: {results.n_cached} of {len(results.records)} cases from the response cache (--steer-no-cache regenerates)"
        )
    workers = Counter(record["worker"] for record in results.records if record.get("worker"))
    if workers:
        terminalreporter.write_line("workers: " + ", ".join(f"{worker} ran {n} cases" for worker, n in sorted(workers.items())))
    if results.choice is not None:
        terminalreporter.write_line("")
        for line in choice_lines(results.choice):
            terminalreporter.write_line(line)
        terminalreporter.write_line("")
    terminalreporter.write_line("mean [95% CI over prompts]; Δ: paired difference from the baseline over the same prompts")
    terminalreporter.write_line("")
    for line in render_table(results, terminal_width(terminalreporter)):
        terminalreporter.write_line(line)
    unsteered = unsteered_lines(results)
    if unsteered:
        terminalreporter.write_line("")
    for line in unsteered:
        terminalreporter.write_line(line, yellow=True)
    count = checks_count_line(results)
    if count is not None:
        terminalreporter.write_line("")
        terminalreporter.write_line(count)
        for line, passed in check_lines(results):
            terminalreporter.write_line(f"  {line}", green=passed, red=not passed)
        for line in undecided_lines(results):
            terminalreporter.write_line(f"  {line}", yellow=True)
    if results.n_lost:
        terminalreporter.write_line(
            f"{results.n_lost} case(s) were collected but did not report ({lost_reason(results)}); "
            "the aggregates above count them as errors",
            yellow=True,
        )


# The short summary's letters (-r) and the report statistics they list.
_SHORT_SUMMARY_STATS = {"f": "failed", "E": "error", "s": "skipped", "x": "xfailed", "X": "xpassed", "p": "passed"}


def write_missed_summary(terminalreporter: Any, stat: str) -> None:
    """MISSED cases in pytest's short test summary: with -rm, or wherever passes are listed (-rp, -rA).

    A missed case passed as a test (its instructions were recorded, not asserted), so
    pytest files it under its own status, which no -r letter of pytest's names.
    """
    chars = getattr(terminalreporter, "reportchars", "")
    missed = terminalreporter.stats.get(stat, [])
    if not missed or not ("m" in chars or "p" in chars) or getattr(terminalreporter.config.option, "no_summary", False):
        return
    listed = any(terminalreporter.stats.get(name) for char, name in _SHORT_SUMMARY_STATS.items() if char in chars)
    if not listed:  # pytest wrote no short summary of its own: start one
        terminalreporter.write_sep("=", "short test summary info", cyan=True, bold=True)
    for report in missed:
        record = getattr(report, "steer_record", None) or {}
        ids = [iid for iid, followed in zip(record.get("instruction_id_list", []), record.get("strict", [])) if not followed]
        terminalreporter.write_line(f"MISSED {_from_cwd(terminalreporter.config, report.nodeid)} - not followed (strict): {', '.join(ids)}")


def _from_cwd(config: Any, nodeid: str) -> str:
    """A node id as pytest's own summary lines show it: its path relative to the invocation directory."""
    path, separator, rest = nodeid.partition("::")
    if config.invocation_params.dir == config.rootpath:
        return nodeid
    return os.path.relpath(config.rootpath / path, config.invocation_params.dir) + separator + rest


def lost_reason(results: RunResults) -> str:
    errors = (record.get("error") or "" for record in results.records)
    return next((error.removeprefix("lost: ") for error in errors if error.startswith("lost: ")), "unknown")


def written_lines(paths: list[Path]) -> list[str]:
    """Where the outputs went: the first path in full, the files beside it by name."""
    if not paths:
        return []
    first = paths[0]
    beside = [p.name for p in paths[1:] if p.parent == first.parent]
    elsewhere = [p for p in paths[1:] if p.parent != first.parent]
    lines = [f"[steer] report: {first}"]
    if beside:
        lines.append(f"[steer]   with {', '.join(beside)} in {first.parent}")
    lines += [f"[steer] wrote {p}" for p in elsewhere]
    return lines

"""The per-config table at the end of the terminal output."""

from __future__ import annotations

from typing import Any

from pytest_steer.results import RunResults
from pytest_steer.stats import Interval

COLUMNS = (
    ("strict prompt", "strict_prompt_accuracy"),
    ("strict instr", "strict_instruction_accuracy"),
    ("loose prompt", "loose_prompt_accuracy"),
    ("loose instr", "loose_instruction_accuracy"),
    ("quality", "quality"),
)


def format_interval(interval: Interval | None, *, signed: bool = False) -> str:
    if interval is None or not interval.is_defined:
        return "-"
    sign = "+" if signed else ""
    return f"{interval.mean:{sign}.3f} [{interval.ci_low:{sign}.2f},{interval.ci_high:{sign}.2f}]"


def table_rows(results: RunResults) -> list[list[str]]:
    header = ["config", "prompts", "cases"] + [title for title, _ in COLUMNS] + ["Δ strict prompt"]
    rows = [header]
    for agg in results.aggregates:
        delta = results.deltas.get(agg.name, {}).get("strict_prompt_accuracy")
        cases = f"{agg.n_cases}" + (f" ({agg.n_errors} err)" if agg.n_errors else "")
        rows.append(
            [agg.name, str(agg.n_prompts), cases]
            + [format_interval(agg.metrics.get(metric)) for _, metric in COLUMNS]
            + [format_interval(delta, signed=True) if delta else "-"]
        )
    return rows


def render_table(rows: list[list[str]], width: int) -> list[str]:
    """Columns that do not fit ``width`` wrap into a second block, keeping the config column."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    blocks, current, used = [], [0], widths[0]
    for index in range(1, len(widths)):
        if used + 2 + widths[index] > width and len(current) > 1:
            blocks.append(current)
            current, used = [0], widths[0]
        current.append(index)
        used += 2 + widths[index]
    blocks.append(current)
    lines = []
    for block in blocks:
        for number, row in enumerate(rows):
            lines.append("  ".join(row[i].ljust(widths[i]) for i in block).rstrip())
            if number == 0:
                lines.append("  ".join("-" * widths[i] for i in block))
        lines.append("")
    return lines[:-1]


def write_summary(terminalreporter: Any, results: RunResults) -> None:
    width = max(60, getattr(terminalreporter, "_tw", None).fullwidth if getattr(terminalreporter, "_tw", None) else 100)
    terminalreporter.section("steering trade-off", sep="=")
    model = results.run["model"]
    terminalreporter.write_line(f"model: {model.get('name')}  dtype: {model.get('dtype', '?')}  attention: {model.get('attn_implementation', '?')}")
    terminalreporter.write_line("mean [95% CI over prompts]; Δ is the paired difference with the baseline")
    for line in render_table(table_rows(results), width):
        terminalreporter.write_line(line)

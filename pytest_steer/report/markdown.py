"""A short markdown summary for CI job pages (e.g. ``--steer-summary-md "$GITHUB_STEP_SUMMARY"``)."""

from __future__ import annotations

from pathlib import Path

from pytest_steer.report.table import (
    METRIC_TITLES,
    config_rows,
    describe_run,
    format_interval,
    instruction_delta_rows,
    unsteered_lines,
)
from pytest_steer.run.results import RunResults
from pytest_steer.stats.metrics import METRICS
from pytest_steer.store.atomic import write_text


def _text(value: object) -> str:
    """Markdown-safe inline text: no table breaks, no raw HTML."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def render_markdown(results: RunResults, report: Path | None = None) -> str:
    failed = [g for g in results.gates if not g.passed] + [c for c in results.comparisons if not c.passed]
    n_checks = len(results.gates) + len(results.comparisons)
    if not n_checks:
        status = "no gates configured"
    elif failed:
        status = f"❌ {len(failed)} of {n_checks} gate(s) failed"
    else:
        status = f"✅ all {n_checks} gate(s) passed"
    lines = [f"### Steering trade-off: {status}", ""]
    lines += [f"- {_text(line)}" for line in describe_run(results)]
    lines += ["", "Mean [95% CI over prompts]; Δ: paired difference from the baseline.", ""]
    header = ["config", "prompts"] + [METRIC_TITLES[m] for m in METRICS] + ["Δ strict prompt", "gates"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", "---:"] + ["---:"] * (len(header) - 2)) + "|")
    for row in config_rows(results):
        delta = format_interval(row.deltas.get("strict_prompt_accuracy"), signed=True) if row.deltas else "-"
        cells = [row.name, str(row.n_prompts)] + [format_interval(row.values[m]) for m in METRICS] + [delta, row.verdicts.text]
        lines.append("| " + " | ".join(_text(c) for c in cells) + " |")
    configs, instruction_rows = instruction_delta_rows(results)
    if instruction_rows:
        lines += ["", "**Per instruction id**: paired Δ from the baseline, strict follow rate / quality [95% CI]", ""]
        lines.append("| instruction id | " + " | ".join(_text(name) for name in configs) + " |")
        lines.append("|---|" + "---:|" * len(configs))
        for iid, cells in instruction_rows:
            texts = [f"{format_interval(f, signed=True)} / {format_interval(q, signed=True)}" for f, q in cells]
            lines.append("| " + " | ".join(_text(c) for c in [iid, *texts]) + " |")
    unsteered = unsteered_lines(results)
    if unsteered:
        lines += [""] + [f"- ⚠️ {_text(line)}" for line in unsteered]
    checks = [(g.passed, g.message) for g in results.gates] + [(c.passed, c.message) for c in results.comparisons]
    if checks:
        lines += ["", "**Gates**", ""]
        lines += [f"- {'✅' if passed else '❌'} `{message.replace('`', chr(39))}`" for passed, message in checks]
    if results.n_lost:
        lines += ["", f"⚠️ {results.n_lost} case(s) were collected but never reported."]
    if report is not None:
        lines += ["", f"Full report: `{report}`"]
    return "\n".join(lines) + "\n"


def write_markdown(results: RunResults, path: Path, report: Path | None = None) -> Path:
    return write_text(Path(path), render_markdown(results, report))

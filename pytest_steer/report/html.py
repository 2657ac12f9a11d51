"""``report.html``: one self-contained page with the table, gates, figures and a case browser.

Figures are embedded as base64 PNG, styles and the small filter script are inline, so the
file can be attached to a CI job or mailed as is. Every piece of text from the run
(prompts, responses, names, messages) is HTML-escaped. The case browser shows each prompt
(and trial) once, with the baseline response next to every steered response.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from collections.abc import Mapping
from string import Template
from typing import Any

from pytest_steer.report.table import (
    METRIC_TITLES,
    config_rows,
    describe_run,
    format_ci,
    format_mean,
    instruction_delta_rows,
    unsteered_lines,
)
from pytest_steer.run.records import unsteered_reason
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import METRICS
from pytest_steer.stats.bootstrap import Interval

MAX_CASE_GROUPS = 1000  # prompt × trial groups in the browser; cases.jsonl always has all
FIGURE_TITLES = {
    "trade_off": "Accuracy and quality against steering strength",
    "instruction_heatmap": "Follow rate and quality per instruction id",
    "instruction_deltas": "Change from the baseline per instruction id (paired, 95% CI)",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d2125; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
.run p { margin: .15rem 0; color: #444; }
table.tradeoff { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.tradeoff th, table.tradeoff td { padding: .3rem .7rem; text-align: right; border-bottom: 1px solid #eaeef2; }
table.tradeoff th:first-child, table.tradeoff td:first-child { text-align: left; }
table.tradeoff tr.delta td { color: #555; border-bottom: 2px solid #d0d7de; }
table.tradeoff .ci { color: #777; font-size: .85em; display: block; }
.pos { color: #1a7f37; } .neg { color: #cf222e; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: .8em; font-weight: 600; }
.pass { background: #dafbe1; color: #1a7f37; } .fail { background: #ffebe9; color: #cf222e; }
ul.checks { list-style: none; padding-left: 0; } ul.checks li { margin: .25rem 0; font-family: ui-monospace, monospace; font-size: .9em; }
figure { margin: 1.5rem 0 2.5rem; } figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { font-weight: 600; margin-bottom: .4rem; }
.wide { overflow-x: auto; }
.controls { display: flex; gap: 1rem; align-items: center; margin: .5rem 0 1rem; }
.controls input[type=search] { padding: .3rem .5rem; width: 24rem; }
details.case { border: 1px solid #d0d7de; border-radius: 6px; margin: .4rem 0; padding: .3rem .7rem; }
details.case > summary { cursor: pointer; }
details.case .ids { color: #555; font-size: .9em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; padding: .5rem; border-radius: 4px;
      margin: .3rem 0; font-size: .85em; max-height: 28rem; overflow: auto; }
.sides { display: grid; grid-auto-flow: column; grid-auto-columns: minmax(18rem, 1fr); gap: .8rem; overflow-x: auto; }
.side { border-top: 3px solid #8c959f; padding-top: .3rem; } .side.baseline { border-top-color: #1d2125; }
.side h4, .prompt h4 { margin: .3rem 0; }
.meta { color: #555; font-size: .85em; margin: 0; }
ul.verdicts { padding-left: 1.1rem; margin: .3rem 0; font-size: .85em; }
.error { color: #cf222e; }
"""

SCRIPT = """
(function () {
  const text = document.getElementById('case-filter');
  const differs = document.getElementById('case-differs');
  const count = document.getElementById('case-count');
  const cases = Array.from(document.querySelectorAll('details.case'));
  function apply() {
    const query = text.value.trim().toLowerCase();
    let shown = 0;
    for (const item of cases) {
      const visible = (!query || item.dataset.search.includes(query)) && (!differs.checked || item.dataset.differs === '1');
      item.hidden = !visible;
      if (visible) { shown += 1; }
    }
    count.textContent = String(shown);
  }
  text.addEventListener('input', apply);
  differs.addEventListener('change', apply);
})();
"""

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<header class="run">
<h1>Steering trade-off</h1>
$run
</header>
<section id="summary">
<h2>Trade-off table</h2>
<p class="meta">mean and 95% CI over prompts; Δ is the paired difference from the unsteered baseline over the same prompts.</p>
$table
</section>
<section id="gates">
<h2>Gates</h2>
$checks
</section>
<section id="figures">
<h2>Figures</h2>
$figures
</section>
<section id="cases">
<h2>Cases</h2>
$cases
</section>
<script>$script</script>
</body>
</html>
"""
)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _delta_class(interval: Interval | None) -> str:
    """Green when the whole CI is above zero, red when it is below."""
    if interval is None or not interval.is_defined:
        return ""
    if interval.ci_low > 0:
        return "pos"
    if interval.ci_high < 0:
        return "neg"
    return ""


def _cell(interval: Interval | None, *, signed: bool) -> str:
    css = f' class="{_delta_class(interval)}"' if signed and _delta_class(interval) else ""
    ci = format_ci(interval)
    ci_html = f'<span class="ci">{esc(ci)}</span>' if ci else ""
    return f"<td{css}>{esc(format_mean(interval, signed=signed))}{ci_html}</td>"


def table_html(results: RunResults) -> str:
    """The trade-off table as an HTML ``<table>`` (also used in the pytest-html summary)."""
    rows = config_rows(results)
    show_gates = any(row.verdicts.text != "-" for row in rows)
    header = ["config", "prompts", "errors"] + [METRIC_TITLES[m] for m in METRICS] + (["gates"] if show_gates else [])
    lines = ['<table class="tradeoff">', "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for row in rows:
        cells = [f"<td>{esc(row.name)}</td>", f"<td>{row.n_prompts}</td>", f"<td>{row.n_errors}/{row.n_cases}</td>"]
        cells += [_cell(row.values[m], signed=False) for m in METRICS]
        if show_gates:
            badge = "" if row.verdicts.text == "-" else ("pass" if not row.verdicts.failed else "fail")
            cells.append(f'<td><span class="badge {badge}">{esc(row.verdicts.text)}</span></td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
        if row.deltas:
            delta = ["<td>Δ vs baseline</td>", "<td></td>", "<td></td>"] + [_cell(row.deltas[m], signed=True) for m in METRICS]
            lines.append('<tr class="delta">' + "".join(delta) + ("<td></td>" if show_gates else "") + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _unsteered_html(results: RunResults) -> str:
    """Under the table: each config with cases that ran unsteered, how many and why."""
    return "".join(f'<p class="meta"><span class="badge fail">unsteered</span> {esc(line)}</p>' for line in unsteered_lines(results))


def instruction_deltas_html(results: RunResults) -> str:
    """Per instruction id, each steered config's paired Δ strict follow rate and Δ quality vs the baseline."""
    configs, rows = instruction_delta_rows(results)
    if not rows:
        return ""
    header = "".join(f"<th>{esc(name)}: Δ follow</th><th>{esc(name)}: Δ quality</th>" for name in configs)
    lines = [
        "<h3>Per instruction id: paired change from the baseline [95% CI]</h3>",
        '<div class="wide"><table class="tradeoff">',
        f"<thead><tr><th>instruction id</th>{header}</tr></thead>",
        "<tbody>",
    ]
    for iid, cells in rows:
        tds = "".join(_cell(follow, signed=True) + _cell(quality, signed=True) for follow, quality in cells)
        lines.append(f"<tr><td>{esc(iid)}</td>{tds}</tr>")
    lines += ["</tbody>", "</table></div>"]
    return "\n".join(lines)


def _run_html(results: RunResults) -> str:
    run = results.run
    described = "".join(f"<p>{esc(line)}</p>" for line in describe_run(results))
    extra = f"<p>git commit {esc(run.get('git_commit') or 'unknown')}, finished {esc(run.get('time', '?'))}</p>"
    details = json.dumps(run, indent=2, ensure_ascii=False, default=str)
    return f"{described}{extra}<details><summary>full run fingerprint</summary><pre>{esc(details)}</pre></details>"


def _checks_html(results: RunResults) -> str:
    items = [(g.passed, g.message) for g in results.gates] + [(c.passed, c.message) for c in results.comparisons]
    if not items:
        return '<p class="meta">No gate was configured for this run.</p>'
    lines = ['<ul class="checks">']
    for passed, message in items:
        badge = '<span class="badge pass">PASS</span>' if passed else '<span class="badge fail">FAIL</span>'
        lines.append(f"<li>{badge} {esc(message)}</li>")
    lines.append("</ul>")
    return "\n".join(lines)


def _figures_html(figures: Mapping[str, bytes], skipped: Mapping[str, str]) -> str:
    parts = [f'<p class="meta">{esc(name)}.png not drawn: {esc(reason)}.</p>' for name, reason in skipped.items()]
    for name, png in figures.items():
        title = FIGURE_TITLES.get(name, name)
        data = base64.b64encode(png).decode("ascii")
        parts.append(  # the caption above its figure, as its heading: below, it would read as the next figure's
            f'<figure id="figure-{esc(name)}"><figcaption>{esc(title)}</figcaption>'
            f'<img alt="{esc(title)}" src="data:image/png;base64,{data}"></figure>'
        )
    return "\n".join(parts) or '<p class="meta">No figure.</p>'


def case_groups(results: RunResults) -> list[tuple[tuple[str, int], dict[str, dict[str, Any]]]]:
    """Records grouped by (prompt key, trial), each group's configs in table order."""
    order = {agg.name: index for index, agg in enumerate(results.aggregates)}
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in results.records:
        groups[(str(record["key"]), int(record["trial"]))][record["config"]] = record
    return [
        (group, dict(sorted(configs.items(), key=lambda item: order.get(item[0], len(order)))))
        for group, configs in sorted(groups.items())
    ]


def _verdict_mark(value: bool) -> str:
    return "✓" if value else "✗"


def _is_baseline(record: Mapping[str, Any]) -> bool:
    return record.get("method") is None and record["alpha"] is None


def _sent_html(record: Mapping[str, Any]) -> list[str]:
    """What steering did to this case: the prompt as the method rewrote it, the spans it steered and those it could not find."""
    if _is_baseline(record):
        return []
    parts = []
    prepared = record.get("prepared_prompt")
    if prepared is not None and prepared != record["prompt"]:
        parts.append('<p class="meta">prompt as the model received it (before the chat template):</p>')
        parts.append(f'<pre class="sent">{esc(prepared)}</pre>')
    missing = set(record.get("missing_spans") or [])
    steered = [span for span in record.get("highlights") or [] if span not in missing]
    if steered:
        parts.append(f'<p class="meta">highlighted: {esc("; ".join(steered))}</p>')
    unsteered = unsteered_reason(record)
    if unsteered is not None:
        parts.append(f'<p class="meta"><span class="badge fail">ran unsteered</span> {esc(unsteered)}</p>')
    if missing:
        parts.append(f'<p class="meta">steering could not locate: {esc("; ".join(record["missing_spans"]))}</p>')
    return parts


def _side_html(record: Mapping[str, Any]) -> str:
    kind = "baseline" if _is_baseline(record) else "steered"
    if record.get("error"):
        badge = '<span class="badge fail">error</span>'
    elif record["follow_all_strict"]:
        badge = '<span class="badge pass">all followed</span>'
    else:
        badge = '<span class="badge fail">missed</span>'
    quality = record.get("quality")
    meta = [f"quality {quality:.3f}" if quality is not None else "no quality score", f"{record.get('n_new_tokens', 0)} new tokens"]
    parts = [
        f'<div class="side {kind}">',
        f"<h4>{esc(record['config'])} {badge}</h4>",
        f'<p class="meta">{esc(" · ".join(meta))}</p>',
    ]
    if record.get("error"):
        parts.append(f'<p class="error">{esc(record["error"])}</p>')
    parts += _sent_html(record)
    parts.append(f'<pre class="response">{esc(record["response"])}</pre>')
    if record["strict"]:
        parts.append('<ul class="verdicts">')
        for iid, strict, loose in zip(record["instruction_id_list"], record["strict"], record["loose"]):
            parts.append(f"<li>{esc(iid)}: strict {_verdict_mark(strict)}, loose {_verdict_mark(loose)}</li>")
        parts.append("</ul>")
    parts.append("</div>")
    return "\n".join(parts)


def _differs(configs: Mapping[str, Mapping[str, Any]]) -> bool:
    outcomes = {(bool(r.get("error")), tuple(r["strict"]), tuple(r["loose"])) for r in configs.values()}
    return len(outcomes) > 1


def _group_html(key: str, trial: int, configs: Mapping[str, Mapping[str, Any]], *, open_: bool = False) -> str:
    # a lost case carries no prompt; show the prompt of a config that ran
    first = next((r for r in configs.values() if r["prompt"]), next(iter(configs.values())))
    ids = ", ".join(first["instruction_id_list"])
    chips = " ".join(
        f'<span class="badge {"pass" if r["follow_all_strict"] and not r.get("error") else "fail"}">{esc(name)}</span>'
        for name, r in configs.items()
    )
    search = " ".join([key, ids, " ".join(configs), first["prompt"]]).lower()
    sides = "\n".join(_side_html(record) for record in configs.values())
    return (
        f'<details class="case"{" open" if open_ else ""} data-search="{esc(search)}" data-differs="{1 if _differs(configs) else 0}">'
        f"<summary><strong>{esc(key)}</strong> trial {trial} <span class=\"ids\">{esc(ids)}</span> {chips}</summary>"
        f'<div class="prompt"><h4>prompt</h4><pre>{esc(first["prompt"])}</pre></div>'
        f'<div class="sides">{sides}</div></details>'
    )


def _cases_html(results: RunResults) -> str:
    groups = case_groups(results)
    if not groups:
        return '<p class="meta">No case records were saved with this report.</p>'
    shown = groups[:MAX_CASE_GROUPS]
    note = (
        f'<p class="meta">Showing the first {len(shown)} of {len(groups)} prompt × trial groups; '
        "cases.jsonl holds every case.</p>"
        if len(shown) < len(groups)
        else ""
    )
    controls = (
        '<div class="controls">'
        '<input type="search" id="case-filter" placeholder="filter by key, instruction id or prompt text">'
        '<label><input type="checkbox" id="case-differs"> only where configs disagree</label>'
        f'<span><span id="case-count">{len(shown)}</span> shown</span></div>'
    )
    groups_html = [_group_html(key, trial, configs, open_=index == 0) for index, ((key, trial), configs) in enumerate(shown)]
    return note + controls + "\n".join(groups_html)


def render_html(results: RunResults, figures: Mapping[str, bytes], skipped: Mapping[str, str] | None = None) -> str:
    """The page; ``figures`` maps a figure name (``trade_off``, ...) to its PNG bytes, ``skipped`` a figure not drawn to why."""
    model = (results.run.get("model") or {}).get("name", "model")
    return PAGE.substitute(
        title=esc(f"Steering trade-off: {model}"),
        css=CSS,
        run=_run_html(results),
        table=table_html(results) + _unsteered_html(results) + instruction_deltas_html(results),
        checks=_checks_html(results),
        figures=_figures_html(figures, skipped or {}),
        cases=_cases_html(results),
        script=SCRIPT,
    )

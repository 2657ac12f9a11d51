"""``report.html``: one self-contained page with the table, gates, figures and a case browser.

The markup is in ``templates/`` (Jinja2, autoescaped); this module gathers what the page
shows. Figures are embedded as base64 PNG, styles and the small filter script are inline, so
the file can be attached to a CI job or mailed as is. Every piece of text from the run
(prompts, responses, names, messages) is HTML-escaped. The case browser shows each prompt
(and trial) once, with the baseline response next to every steered response.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from pytest_steer.report.choice import choice_lines
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
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import METRICS

MAX_CASE_GROUPS = 1000  # prompt × trial groups in the browser; cases.jsonl always has all
FIGURE_TITLES = {
    "trade_off": "Accuracy and quality against steering strength",
    "instruction_heatmap": "Follow rate and quality per instruction id",
    "instruction_deltas": "Change from the baseline per instruction id (paired, 95% CI)",
}


def _escaped(value: Any) -> Any:
    """Escape as :func:`html.escape` does (quotes as ``&quot;``); markup from the templates passes as it is."""
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value), quote=True))


TEMPLATES = Environment(
    loader=PackageLoader("pytest_steer.report", "templates"),
    autoescape=select_autoescape(["html"]),
    finalize=_escaped,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Cell:
    """One number of a table: its mean, its interval and, for a change, the colour of its sign."""

    text: str
    ci: str
    css: str


@dataclass(frozen=True)
class Sent:
    """What steering did to a case: the prompt as the method rewrote it, the spans it steered and those it could not find."""

    prepared: str | None
    highlighted: str
    unsteered: str | None
    missing: str


def _delta_class(interval: Interval | None) -> str:
    """Green when the whole CI is above zero, red when it is below."""
    if interval is None or not interval.is_defined:
        return ""
    if interval.ci_low > 0:
        return "pos"
    if interval.ci_high < 0:
        return "neg"
    return ""


def _cell(interval: Interval | None, *, signed: bool) -> Cell:
    return Cell(format_mean(interval, signed=signed), format_ci(interval), _delta_class(interval) if signed else "")


def _table(results: RunResults) -> dict[str, Any]:
    rows = config_rows(results)
    show_gates = any(row.verdicts.text != "-" for row in rows)
    return {
        "header": ["config", "prompts", "errors"] + [METRIC_TITLES[m] for m in METRICS] + (["gates"] if show_gates else []),
        "show_gates": show_gates,
        "rows": [
            {
                "name": row.name,
                "n_prompts": row.n_prompts,
                "errors": f"{row.n_errors}/{row.n_cases}",
                "metrics": [_cell(row.values[m], signed=False) for m in METRICS],
                "badge": "" if row.verdicts.text == "-" else ("pass" if not row.verdicts.failed else "fail"),
                "gates": row.verdicts.text,
                "deltas": [_cell(row.deltas[m], signed=True) for m in METRICS] if row.deltas else [],
            }
            for row in rows
        ],
    }


def table_html(results: RunResults) -> str:
    """The trade-off table as an HTML ``<table>`` (also used in the pytest-html summary)."""
    return str(TEMPLATES.get_template("tables.html").module.tradeoff_table(_table(results)))


def _instruction_deltas(results: RunResults) -> dict[str, Any]:
    """Per instruction id, each steered config's paired Δ strict follow rate and Δ quality vs the baseline."""
    configs, rows = instruction_delta_rows(results)
    cells = [(iid, [_cell(change, signed=True) for pair in pairs for change in pair]) for iid, pairs in rows]
    return {"configs": configs, "rows": cells}


def _figures(figures: Mapping[str, bytes]) -> list[dict[str, str]]:
    return [
        {"name": name, "title": FIGURE_TITLES.get(name, name), "data": base64.b64encode(png).decode("ascii")}
        for name, png in figures.items()
    ]


def case_groups(results: RunResults) -> list[tuple[tuple[str, int], dict[str, dict[str, Any]]]]:
    """Records grouped by (prompt key, trial), each group's configs in table order."""
    order = {agg.name: index for index, agg in enumerate(results.aggregates)}
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in results.records:
        groups[(str(record["key"]), int(record["trial"]))][record["config"]] = record
    return [
        (group, dict(sorted(configs.items(), key=lambda item: order.get(item[0], len(order))))) for group, configs in sorted(groups.items())
    ]


def _is_baseline(record: Mapping[str, Any]) -> bool:
    return record.get("method") is None and record["alpha"] is None


def _sent(record: Mapping[str, Any]) -> Sent | None:
    if _is_baseline(record):
        return None
    prepared = record.get("prepared_prompt")
    missing = set(record.get("missing_spans") or [])
    steered = [span for span in record.get("highlights") or [] if span not in missing]
    return Sent(
        prepared=prepared if prepared is not None and prepared != record["prompt"] else None,
        highlighted="; ".join(steered),
        unsteered=unsteered_reason(record),
        missing="; ".join(record["missing_spans"]) if missing else "",
    )


def _side(record: Mapping[str, Any]) -> dict[str, Any]:
    """One config's response to the group's prompt, with its verdicts."""
    if record.get("error"):
        badge = ("fail", "error")
    elif record["follow_all_strict"]:
        badge = ("pass", "all followed")
    else:
        badge = ("fail", "missed")
    quality = record.get("quality")
    meta = [f"quality {quality:.3f}" if quality is not None else "no quality score", f"{record.get('n_new_tokens', 0)} new tokens"]
    mark = {True: "✓", False: "✗"}
    return {
        "kind": "baseline" if _is_baseline(record) else "steered",
        "config": record["config"],
        "badge": badge,
        "meta": " · ".join(meta),
        "error": record.get("error"),
        "sent": _sent(record),
        "response": record["response"],
        "verdicts": [
            (iid, mark[bool(strict)], mark[bool(loose)])
            for iid, strict, loose in zip(record["instruction_id_list"], record["strict"], record["loose"])
        ],
    }


def _differs(configs: Mapping[str, Mapping[str, Any]]) -> bool:
    outcomes = {(bool(r.get("error")), tuple(r["strict"]), tuple(r["loose"])) for r in configs.values()}
    return len(outcomes) > 1


def _group(key: str, trial: int, configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    # a lost case carries no prompt; show the prompt of a config that ran
    first = next((r for r in configs.values() if r["prompt"]), next(iter(configs.values())))
    ids = ", ".join(first["instruction_id_list"])
    return {
        "key": key,
        "trial": trial,
        "ids": ids,
        "search": " ".join([key, ids, " ".join(configs), first["prompt"]]).lower(),
        "differs": 1 if _differs(configs) else 0,
        "chips": [(name, "pass" if r["follow_all_strict"] and not r.get("error") else "fail") for name, r in configs.items()],
        "prompt": first["prompt"],
        "sides": [_side(record) for record in configs.values()],
    }


def _cases(results: RunResults) -> dict[str, Any]:
    groups = case_groups(results)
    shown = [_group(key, trial, configs) for (key, trial), configs in groups[:MAX_CASE_GROUPS]]
    return {"total": len(groups), "shown": shown}


def render_html(results: RunResults, figures: Mapping[str, bytes], skipped: Mapping[str, str] | None = None) -> str:
    """The page; ``figures`` maps a figure name (``trade_off``, ...) to its PNG bytes, ``skipped`` a figure not drawn to why."""
    run = results.run
    return TEMPLATES.get_template("report.html").render(
        model=(run.get("model") or {}).get("name", "model"),
        described=describe_run(results),
        choice=choice_lines(results.choice) if results.choice is not None else [],
        commit=run.get("git_commit") or "unknown",
        finished=run.get("time", "?"),
        fingerprint=json.dumps(run, indent=2, ensure_ascii=False, default=str),
        table=_table(results),
        unsteered=unsteered_lines(results),
        deltas=_instruction_deltas(results),
        checks=[(g.passed, g.message) for g in results.gates] + [(c.passed, c.message) for c in results.comparisons],
        figures=_figures(figures),
        skipped=skipped or {},
        cases=_cases(results),
    )

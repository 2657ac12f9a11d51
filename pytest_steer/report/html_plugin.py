"""pytest-html hooks: the trade-off table in the report summary, each case's response in its row.

Registered by the plugin only when pytest-html is importable; every hook is optional, so
the module is harmless when pytest-html is installed but disabled (``-p no:html``).
"""

from __future__ import annotations

import html
from typing import Any

import pytest

from pytest_steer.run.session import SESSION_KEY

STYLE = (
    "<style>"
    ".steer-case pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:6px}"
    "table.tradeoff td,table.tradeoff th{padding:2px 8px;text-align:right}"
    "table.tradeoff td:first-child,table.tradeoff th:first-child{text-align:left}"
    "table.tradeoff .ci{color:#777;font-size:.85em;display:block}"
    "</style>"
)


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session) -> None:
    steer = session.config.stash[SESSION_KEY]
    if not steer.records:
        return
    # why: the report modules load numpy and jinja2, which a run without steer tests never needs
    from pytest_steer.report.html import table_html
    from pytest_steer.report.table import describe_run

    results = steer.results()
    described = "".join(f"<p>{html.escape(line)}</p>" for line in describe_run(results))
    prefix.append(f'{STYLE}<div class="steer-summary"><h2>Steering trade-off</h2>{described}{table_html(results)}</div>')


def case_html(record: dict[str, Any]) -> str:
    """Prompt, response and verdicts of one case; a single line, so the log view keeps it whole."""
    verdicts = ", ".join(
        f"{html.escape(iid)}: strict {'✓' if s else '✗'} loose {'✓' if lo else '✗'}"
        for iid, s, lo in zip(record["instruction_id_list"], record["strict"], record["loose"])
    )
    quality = "" if record.get("quality") is None else f" · quality {record['quality']:.3f}"
    error = f"<p>error: {html.escape(record['error'])}</p>" if record.get("error") else ""
    prepared = record.get("prepared_prompt")
    sent = f"<p>prompt as sent:</p><pre>{html.escape(prepared)}</pre>" if prepared not in (None, record["prompt"]) else ""
    text = (
        f'<div class="steer-case"><p><b>{html.escape(record["config"])}</b> · prompt {html.escape(str(record["key"]))}'
        f" · trial {record['trial']}{quality}</p>{error}"
        f"<p>prompt:</p><pre>{html.escape(record['prompt'])}</pre>{sent}"
        f"<p>response:</p><pre>{html.escape(record['response'])}</pre>"
        f"<p>{verdicts}</p></div>"
    )
    return text.replace("\r", "").replace("\n", "&#10;")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_html(report: pytest.TestReport, data: list[str]) -> None:
    record = getattr(report, "steer_record", None)
    if record is not None:
        data.insert(0, case_html(record))

"""A real run of the shipped suite (tiny model) writes every output where the docs say."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = str(REPO / "suites" / "ifeval")


def test_run_writes_report_dir_markdown_and_pytest_html(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("pytest_html")
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess(
        SUITE,
        "--rootdir",
        str(REPO),
        "-o",
        f"cache_dir={cache}",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-limit",
        "2",
        "--steer-max-new-tokens",
        "4",
        "--steer-alpha",
        "10",
        "--steer-summary-md",
        str(tmp_path / "summary.md"),
        "--steer-min-prompts",
        "3",
        "--html",
        str(tmp_path / "pytest-html.html"),
        "--self-contained-html",
    )
    assert result.ret == 0, result.stdout.str()
    report = cache / "d" / "steer-report"  # default: inside pytest's cache dir
    for name in (
        "report.html",
        "results.json",
        "cases.jsonl",
        "summary.csv",
        "trade_off.png",
        "instruction_heatmap.png",
        "instruction_deltas.png",
    ):
        assert (report / name).is_file(), name
    result.stdout.fnmatch_lines([f"[[]steer[]] report: {report / 'report.html'}"])

    data = json.loads((report / "results.json").read_text())
    assert [c["name"] for c in data["configs"]] == ["baseline", "pasta_alpha10"]
    assert data["min_prompts"] == 3  # two prompts: no change per instruction id is estimable
    deltas = [d for entry in data["configs"][1]["instruction_delta_vs_baseline"].values() for d in entry.values()]
    assert deltas and not any(d["estimable"] or d["ci_low"] is not None for d in deltas)
    for config in data["configs"]:
        mean = config["metrics"]["strict_prompt_accuracy"]["mean"]
        result.stdout.fnmatch_lines([f"{config['name']} *{mean:.3f}*"])
    cases = [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines()]
    assert sorted((c["key"], c["config"]) for c in cases) == sorted(
        (key, config) for key in {c["key"] for c in cases} for config in ("baseline", "pasta_alpha10")
    )

    summary = (tmp_path / "summary.md").read_text()
    assert "| baseline | 2 |" in summary and "| pasta_alpha10 | 2 |" in summary

    page = (tmp_path / "pytest-html.html").read_text()
    assert '<div class="steer-summary"><h2>Steering trade-off</h2>' in page
    logs = _pytest_html_logs(page)
    assert len(logs) == 4
    for case in cases:
        nodeid = f"suites/ifeval/test_ifeval.py::test_follows_instructions[{case['key']}-{case['config']}-t0]"
        assert logs[nodeid].startswith(f'<div class="steer-case"><p><b>{case["config"]}</b> · prompt {case["key"]}')
        response = html.escape(case["response"]).replace("\n", "&#10;")
        assert f"<p>response:</p><pre>{response}</pre>" in logs[nodeid]


def _pytest_html_logs(page: str) -> dict[str, str]:
    """The log HTML of each test in a self-contained pytest-html report (kept in a JSON data attribute)."""
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))
    return {nodeid: entries[0]["log"] for nodeid, entries in blob["tests"].items()}

"""report.html and the markdown summary: escaped text, paired cases, the same numbers as the JSON."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import HOSTILE_RESPONSE, make_method_results, make_records, make_run

from pytest_steer.report.files import write_report
from pytest_steer.report.html import FIGURE_TITLES, MAX_CASE_GROUPS, render_html
from pytest_steer.report.json import results_dict
from pytest_steer.report.markdown import render_markdown
from pytest_steer.run.results import RunResults

REPO = Path(__file__).resolve().parents[2]
FIGURES = {"trade_off": b"\x89PNG-one", "instruction_heatmap": b"\x89PNG-two", "instruction_deltas": b"\x89PNG-three"}


def _group(page: str, key: str, trial: int) -> str:
    """The case-browser block of one prompt and trial."""
    blocks = re.findall(r'<details class="case".*?</details>', page, flags=re.S)
    return next(b for b in blocks if f"<strong>{key}</strong> trial {trial} " in b)


def test_responses_and_prompts_are_escaped(results: RunResults) -> None:
    page = render_html(results, FIGURES)
    assert HOSTILE_RESPONSE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;/pre&gt;&lt;b&gt;bold&lt;/b&gt;" in page
    assert "write about &lt;topic&gt; &amp; include a title." in page
    assert page.count("<script>") == 1  # the page's own filter script only


def test_case_block_shows_baseline_and_steered_side_by_side(results: RunResults) -> None:
    page = render_html(results, FIGURES)
    block = _group(page, "p003", 1)
    sides = re.findall(r'<div class="side (baseline|steered)">\s*<h4>(\w+)', block)
    assert sides == [("baseline", "baseline"), ("steered", "alpha5"), ("steered", "alpha10"), ("steered", "alpha30")]
    for config in ("baseline", "alpha5", "alpha10", "alpha30"):
        assert f"{config} answer 3.1" in block
    assert block.count("<pre") == 5  # the prompt once, then one response per config
    record = next(r for r in results.records if (r["key"], r["trial"], r["config"]) == ("p003", 1, "alpha10"))
    marks = [f"strict {'✓' if s else '✗'}, loose {'✓' if lo else '✗'}" for s, lo in zip(record["strict"], record["loose"])]
    alpha10 = block.split("<h4>alpha10")[1].split('<div class="side')[0]
    for iid, mark in zip(record["instruction_id_list"], marks):
        assert f"<li>{iid}: {mark}</li>" in alpha10


def test_errored_case_shows_its_error(results: RunResults) -> None:
    block = _group(render_html(results, FIGURES), "p005", 1)
    assert "generation failed: RuntimeError: out of memory" in block
    assert '<span class="badge fail">error</span>' in block


def test_table_figures_and_gates_are_on_the_page(results: RunResults) -> None:
    page = render_html(results, FIGURES)
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "Per instruction id: paired change from the baseline" in page
    for config in results_dict(results)["configs"]:
        value = config["metrics"]["strict_prompt_accuracy"]
        assert f'<td>{value["mean"]:.3f}<span class="ci">[{value["ci_low"]:.2f}, {value["ci_high"]:.2f}]</span></td>' in page
    assert page.count('<span class="badge fail">FAIL</span>') == 1
    assert "alpha10: strict_prompt_accuracy - baseline = +0.250" in page
    assert "passes if shown: ci_low &gt;= 0.5" in page and "not shown, FAIL" in page


def test_each_caption_heads_its_own_figure(results: RunResults) -> None:
    page = render_html(results, FIGURES)
    figures = re.findall(r"<figure[^>]*>(.*?)</figure>", page, re.S)
    assert len(figures) == len(FIGURES)
    for inner, title in zip(figures, FIGURE_TITLES.values()):
        assert re.fullmatch(rf'<figcaption>{re.escape(title)}</figcaption><img alt="{re.escape(title)}" src="data:[^"]+">', inner)


def test_case_browser_is_capped(monkeypatch: pytest.MonkeyPatch, results: RunResults) -> None:
    monkeypatch.setattr("pytest_steer.report.html.MAX_CASE_GROUPS", 5)
    page = render_html(results, FIGURES)
    assert page.count('<details class="case"') == 5
    assert "Showing the first 5 of 24 prompt × trial groups" in page
    assert MAX_CASE_GROUPS >= 1000


def test_markdown_summary_has_a_row_per_config_and_the_gates(results: RunResults) -> None:
    text = render_markdown(results, report=Path("out/report.html"))
    assert text.startswith("### Steering trade-off: ❌ 1 of 5 gate(s) failed")
    main, per_instruction = text.split("**Per instruction id**")
    rows = [line for line in main.splitlines() if line.startswith("| ") and not line.startswith("| config")]
    assert [row.split(" | ")[0] for row in rows] == ["| baseline", "| alpha5", "| alpha10", "| alpha30"]
    deltas = results_dict(results)["configs"][1]["instruction_delta_vs_baseline"]
    assert "| instruction id | alpha5 | alpha10 | alpha30 |" in per_instruction
    for iid, metrics in deltas.items():
        follow = metrics["follow_rate"]
        assert f"| {iid} | {follow['mean']:+.3f} [{follow['ci_low']:.2f}, {follow['ci_high']:.2f}] / " in per_instruction
    data = results_dict(results)
    for row, config in zip(rows, data["configs"]):
        value = config["metrics"]["strict_prompt_accuracy"]
        assert f"| {value['mean']:.3f} [{value['ci_low']:.2f}, {value['ci_high']:.2f}] |" in row
    assert "❌ `alpha10: strict_prompt_accuracy - baseline" in text
    assert text.rstrip().endswith("Full report: `out/report.html`")


def test_markdown_escapes_table_breaking_text() -> None:
    records = [dict(r, config="a|b") for r in make_records(n_prompts=2, trials=1) if r["alpha"] is None]
    results = RunResults.from_records(make_run(n_prompts=2, trials=1), records, seed=0)
    assert "| a\\|b |" in render_markdown(results)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(results: RunResults, tmp_path: Path) -> None:
    write_report(results, tmp_path)
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_report_render.py"), str(tmp_path), "--screenshot", str(tmp_path / "shot.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok   24 case group(s) in the DOM" in check.stdout


def test_figures_are_drawn_again_only_when_what_they_plot_changed(results: RunResults, tmp_path: Path, monkeypatch) -> None:
    from pytest_steer.report import files

    write_report(results, tmp_path)
    first = (tmp_path / "trade_off.png").read_bytes()
    drawn = []
    monkeypatch.setattr(files, "render_figures", lambda r: drawn.append(r) or FIGURES)
    write_report(results, tmp_path)  # the same results: the PNGs on disk are reused
    assert drawn == [] and (tmp_path / "trade_off.png").read_bytes() == first
    (tmp_path / "instruction_deltas.png").unlink()
    write_report(results, tmp_path)  # a figure is missing: all are drawn
    assert len(drawn) == 1 and (tmp_path / "trade_off.png").read_bytes() == FIGURES["trade_off"]
    changed = RunResults.from_records(make_run(n_prompts=2, trials=1), make_records(n_prompts=2, trials=1), seed=0)
    write_report(changed, tmp_path)  # other aggregates: drawn again
    assert len(drawn) == 2


def test_every_steered_method_is_styled_as_steered_and_shows_what_it_sent() -> None:
    page = render_html(make_method_results(), FIGURES)
    block = _group(page, "p001", 0)
    sides = re.findall(r'<div class="side (baseline|steered)">\s*<h4>(\w+)', block)
    assert sides == [("baseline", "baseline"), ("steered", "alpha10"), ("steered", "emphasis"), ("steered", "myvec")]
    emphasis = block.split("<h4>emphasis")[1].split('<div class="side')[0]
    assert '<pre class="sent">Prompt p001: write about &lt;topic&gt; &amp; INCLUDE A TITLE.</pre>' in emphasis
    alpha10 = block.split("<h4>alpha10")[1].split('<div class="side')[0]
    assert "ran unsteered" in alpha10 and "steering could not locate: include a title for p001" in alpha10
    assert 'class="sent"' not in alpha10  # PASTA sends the prompt unchanged
    steered = _group(page, "p002", 0).split("<h4>alpha10")[1].split('<div class="side')[0]
    assert "highlighted: include a title for p002" in steered and "ran unsteered" not in steered


def test_unsteered_rows_are_counted_per_config() -> None:
    from pytest_steer.report.table import unsteered_lines

    results = make_method_results()
    counts = {config["name"]: config["n_unsteered"] for config in results_dict(results)["configs"]}
    assert counts == {"baseline": 0, "alpha10": 1, "emphasis": 1, "myvec": 0}
    assert unsteered_lines(results)[0].startswith("alpha10: 1 of 4 case(s) ran unsteered")
    assert f"- ⚠️ {unsteered_lines(results)[0]}" in render_markdown(results)

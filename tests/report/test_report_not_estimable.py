"""A change per instruction id over fewer prompts than --steer-min-prompts is shown as not estimable, in every output."""

from __future__ import annotations

import math
import re

import pytest
from report_fixtures import make_records, make_run

from pytest_steer.report.deltas_figure import instruction_delta_figure
from pytest_steer.report.html import render_html
from pytest_steer.report.json import results_dict, results_from_dict
from pytest_steer.report.markdown import render_markdown
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import instruction_deltas_vs_baseline, is_estimable
from pytest_steer.stats.bootstrap import Interval

RARE = "punctuation:no_comma"  # held by one prompt only: the baseline misses it, every steered config follows it


def _with_rare_instruction() -> list[dict]:
    records = []
    for record in make_records(n_prompts=12, trials=1):
        if record["key"] == "p000" and not record["error"]:
            followed = record["alpha"] is not None
            strict, loose = [*record["strict"], followed], [*record["loose"], followed]
            record = record | {
                "instruction_id_list": [*record["instruction_id_list"], RARE],
                "strict": strict,
                "loose": loose,
                "follow_all_strict": all(strict),
                "follow_all_loose": all(loose),
            }
        records.append(record)
    return records


@pytest.fixture(scope="module")
def results() -> RunResults:
    """Every other id is held by four prompts: estimable at --steer-min-prompts 4."""
    return RunResults.from_records(make_run(n_prompts=12, trials=1), _with_rare_instruction(), seed=0, min_prompts=4)


def test_one_prompt_is_never_enough_and_min_prompts_sets_the_rest() -> None:
    assert not is_estimable(Interval(1.0, 1.0, 1.0, 1), 0)
    assert not is_estimable(Interval(0.5, 0.1, 0.9, 9), 10)
    assert is_estimable(Interval(0.5, 0.1, 0.9, 10), 10)
    assert not is_estimable(Interval.empty(), 0)


def test_the_delta_keeps_its_mean_and_count_but_no_interval(results: RunResults) -> None:
    deltas = instruction_deltas_vs_baseline(results.aggregates, min_prompts=4)
    rare = deltas["alpha10"][RARE]["follow_rate"]
    assert (rare.mean, rare.n_prompts) == (1.0, 1) and math.isnan(rare.ci_low) and math.isnan(rare.ci_high)
    common = deltas["alpha10"]["detectable_format:title"]["follow_rate"]
    assert common.n_prompts == 4 and common.is_defined
    assert not instruction_deltas_vs_baseline(results.aggregates, min_prompts=5)["alpha10"]["detectable_format:title"][
        "follow_rate"
    ].is_defined


def test_results_json_has_null_bounds_and_a_flag(results: RunResults) -> None:
    data = results_dict(results)
    assert data["min_prompts"] == 4
    entry = data["configs"][2]["instruction_delta_vs_baseline"]
    assert entry[RARE]["follow_rate"] == {"mean": 1.0, "ci_low": None, "ci_high": None, "n_prompts": 1, "estimable": False}
    assert entry["detectable_format:title"]["follow_rate"]["estimable"] is True
    assert entry["detectable_format:title"]["follow_rate"]["ci_low"] is not None
    assert results_from_dict(data).min_prompts == 4  # a rebuilt report shows the same


def _row(page: str, iid: str) -> str:
    return re.search(rf"<tr><td>{re.escape(iid)}</td>.*?</tr>", page).group(0)


def test_html_shows_no_interval_and_no_colour(results: RunResults) -> None:
    page = render_html(results, {})
    row = _row(page, RARE)
    assert '<td>+1.000<span class="ci">(n=1, not estimable)</span></td>' in row
    assert 'class="pos"' not in row and 'class="neg"' not in row and "[1.00, 1.00]" not in row
    assert re.search(r"\[-?\d\.\d\d, -?\d\.\d\d\]", _row(page, "detectable_format:title"))


def test_markdown_shows_no_interval(results: RunResults) -> None:
    text = render_markdown(results)
    row = next(line for line in text.splitlines() if line.startswith(f"| {RARE} |"))
    assert "+1.000 (n=1, not estimable) / " in row and "[" not in row


def test_figure_draws_no_bar_but_says_why(results: RunResults) -> None:
    follow = instruction_delta_figure(results).axes[0]
    ids = [t.get_text() for t in follow.get_yticklabels()]
    row = ids.index(RARE)
    bars = [patch for container in follow.containers if hasattr(container, "patches") for patch in container.patches]
    assert bars and not any(abs(patch.get_y() + patch.get_height() / 2 - row) < 0.45 for patch in bars)
    assert "α=10: n=1, not estimable" in [t.get_text() for t in follow.texts]

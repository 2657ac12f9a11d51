"""The terminal table: same numbers as results.json, laid out for the terminal width."""

from __future__ import annotations

import re
from typing import Any

from pytest_steer.report.json import results_dict
from pytest_steer.report.terminal import render_table, write_summary, written_lines
from pytest_steer.run.results import RunResults

NUMBER = r"[+-]?\d+\.\d+"


def test_fits_100_columns_with_every_config_and_delta(results: RunResults) -> None:
    lines = render_table(results, 100)
    assert max(len(line) for line in lines) <= 100
    names = [line.split()[0] for line in lines if line and not line.startswith((" ", "-"))]
    assert names == ["config", "baseline", "alpha5", "alpha10", "alpha30"]
    assert sum(line.startswith("  Δ") for line in lines) == 3
    assert any(line.startswith("alpha10") and line.endswith("FAIL 1/2") for line in lines)
    assert any(line.startswith("baseline") and line.endswith("pass 1/1") for line in lines)


def test_wide_table_prints_the_json_numbers(results: RunResults) -> None:
    """One line per config: means at 3 decimals, CIs at 2, in METRICS order; Δ lines signed."""
    data = results_dict(results)
    lines = render_table(results, 200)
    assert len(lines) == 2 + 4 + 3  # header, rule, 4 configs, 3 deltas
    by_name = {line.split()[0]: line for line in lines if line.startswith(("baseline", "alpha"))}
    deltas = [line for line in lines if line.startswith("  Δ")]
    metrics = ["strict_prompt_accuracy", "strict_instruction_accuracy", "loose_prompt_accuracy", "loose_instruction_accuracy", "quality"]
    for config in data["configs"]:
        numbers = [float(x) for x in re.findall(NUMBER, by_name[config["name"]])]
        expected = []
        for metric in metrics:
            value = config["metrics"][metric]
            expected += [round(value["mean"], 3), round(value["ci_low"], 2), round(value["ci_high"], 2)]
        assert numbers == expected, config["name"]
    for line, config in zip(deltas, data["configs"][1:]):
        numbers = [float(x) for x in re.findall(NUMBER, line)]
        delta = config["delta_vs_baseline"]["strict_prompt_accuracy"]
        assert numbers[:3] == [round(delta["mean"], 3), round(delta["ci_low"], 2), round(delta["ci_high"], 2)]


def test_narrow_terminal_wraps_columns_and_repeats_config(results: RunResults) -> None:
    lines = render_table(results, 60)
    assert max(len(line) for line in lines) <= 60
    headers = [line for line in lines if line.startswith("config")]
    assert len(headers) >= 2  # the metric columns wrapped into a second block
    assert sum(line.startswith("alpha30") for line in lines) == len(headers)


def test_stacked_layout_shows_error_counts(results: RunResults) -> None:
    lines = render_table(results, 100)
    row = next(i for i, line in enumerate(lines) if line.startswith("alpha30"))
    assert "1 err" in lines[row + 1]


class FakeReporter:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def section(self, title: str, sep: str = "=") -> None:
        self.lines.append((f"== {title}", {}))

    def write_line(self, line: str, **markup: Any) -> None:
        self.lines.append((line, markup))


def test_summary_lists_gates_in_colour(results: RunResults) -> None:
    reporter = FakeReporter()
    write_summary(reporter, results)
    text = [line for line, _ in reporter.lines]
    assert "gates: 4 passed, 1 failed" in text
    failing = [(line, markup) for line, markup in reporter.lines if line.startswith("  FAIL")]
    assert len(failing) == 1 and failing[0][1] == {"green": False, "red": True}
    assert "alpha10: strict_prompt_accuracy - baseline" in failing[0][0]
    assert any(line.startswith("model: tiny-test-model") for line in text)


def test_written_lines_group_files_of_the_report_dir(tmp_path) -> None:
    paths = [tmp_path / "report.html", tmp_path / "results.json", tmp_path / "other" / "r.json"]
    assert written_lines(paths) == [
        f"[steer] report: {tmp_path / 'report.html'}",
        f"[steer]   with results.json in {tmp_path}",
        f"[steer] wrote {tmp_path / 'other' / 'r.json'}",
    ]


def test_a_sequential_run_that_stopped_early_says_its_looks_covered_only_what_ran() -> None:
    from pytest_steer.report.table import describe_sequential

    sequential = {"looks": [{"look": 1, "open": 2}], "prompts_used": 8, "prompts_total": 12, "block_size": 4}
    assert describe_sequential(sequential).startswith("sequential: 1 look(s) over all 12 prompts")
    line = describe_sequential(sequential, stopped="stopped after 1 failure by -x/--maxfail")
    assert line == (
        "sequential: 1 look(s) before the run ended early (stopped after 1 failure by -x/--maxfail); "
        "checks on configs it did not run in full are not decided"
    )

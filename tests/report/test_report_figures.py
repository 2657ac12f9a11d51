"""The figures: built as matplotlib Figures and inspected (axes, labels, plotted data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_fixtures import make_method_results, make_records, make_run

from pytest_steer.report.deltas_figure import instruction_delta_figure
from pytest_steer.report.heatmap_figure import instruction_heatmap_figure
from pytest_steer.report.pareto_panel import Point, pareto_frontier
from pytest_steer.report.plotting import png_bytes
from pytest_steer.report.tradeoff_figure import ALPHA_LABEL, trade_off_figure
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import instruction_deltas_vs_baseline, instruction_quality
from pytest_steer.stats.bootstrap import Interval


def _series(ax, label: str):
    """The data line of an errorbar series, or a plain line, by legend label."""
    for container in ax.containers:
        if container.get_label() == label:
            return container.lines[0]
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_trade_off_has_three_labelled_panels(results: RunResults) -> None:
    figure = trade_off_figure(results)
    accuracy, quality, pareto = figure.axes
    assert accuracy.get_xlabel() == quality.get_xlabel() == ALPHA_LABEL
    assert "larger = stronger steering" in ALPHA_LABEL
    assert accuracy.get_ylabel().startswith("accuracy")
    assert quality.get_ylabel().startswith("quality")
    assert (pareto.get_xlabel(), pareto.get_ylabel()) == ("strict prompt accuracy", "quality (higher is better)")
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["5", "10", "30"]


def test_accuracy_and_quality_panels_plot_the_aggregates(results: RunResults) -> None:
    accuracy, quality, _ = trade_off_figure(results).axes
    steered = results.aggregates[1:]
    strict = _series(accuracy, "strict prompt")
    assert list(strict.get_xdata()) == [5.0, 10.0, 30.0]
    assert list(strict.get_ydata()) == [agg.metrics["strict_prompt_accuracy"].mean for agg in steered]
    loose = _series(accuracy, "loose instr")
    assert list(loose.get_ydata()) == [agg.metrics["loose_instruction_accuracy"].mean for agg in steered]
    assert list(_series(quality, "steered").get_ydata()) == [agg.metrics["quality"].mean for agg in steered]
    baseline = results.aggregates[0]
    reference = _series(quality, "baseline (unsteered)")
    assert list(reference.get_ydata()) == [baseline.metrics["quality"].mean] * 2
    assert list(_series(accuracy, "baseline (unsteered), strict prompt").get_ydata())[0] == baseline.metrics["strict_prompt_accuracy"].mean


def test_error_bars_span_the_confidence_intervals(results: RunResults) -> None:
    _, quality, _ = trade_off_figure(results).axes
    container = next(c for c in quality.containers if c.get_label() == "steered")
    segments = container.lines[2][0].get_segments()
    for segment, agg in zip(segments, results.aggregates[1:]):
        interval = agg.metrics["quality"]
        assert np.allclose(sorted(segment[:, 1]), [interval.ci_low, interval.ci_high])


def test_pareto_panel_marks_baseline_and_frontier(results: RunResults) -> None:
    _, _, pareto = trade_off_figure(results).axes
    baseline = _series(pareto, "baseline (unsteered)")
    agg = results.aggregates[0]
    assert baseline.get_marker() == "*"
    assert (baseline.get_xdata()[0], baseline.get_ydata()[0]) == (agg.metrics["strict_prompt_accuracy"].mean, agg.metrics["quality"].mean)
    frontier = _series(pareto, "Pareto frontier")
    points = [(a.metrics["strict_prompt_accuracy"].mean, a.metrics["quality"].mean) for a in results.aggregates]
    undominated = sorted(p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points))
    assert list(zip(frontier.get_xdata(), frontier.get_ydata())) == undominated
    assert {t.get_text() for t in pareto.texts} == {"baseline", "alpha5", "alpha10", "alpha30"}


def _steered_like(records: list[dict], source: str, *configs: str) -> list[dict]:
    """``configs`` get the verdicts and quality of ``source``: their points fall on its point."""
    by_case = {(r["key"], r["trial"]): r for r in records if r["config"] == source}
    fields = ("strict", "loose", "follow_all_strict", "follow_all_loose", "quality", "error")
    return [r | {k: by_case[(r["key"], r["trial"])][k] for k in fields} if r["config"] in configs else r for r in records]


def test_pareto_labels_do_not_overlap() -> None:
    records = _steered_like(make_records(n_prompts=12, trials=1), "alpha10", "alpha5", "alpha30")
    figure = trade_off_figure(RunResults.from_records(make_run(n_prompts=12, trials=1), records, seed=0))
    png_bytes(figure)  # the final layout
    pareto = figure.axes[2]
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in pareto.texts]
    assert len(boxes) >= 2
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), [t.get_text() for t in pareto.texts]
    assert "alpha5, alpha10, alpha30" in [t.get_text() for t in pareto.texts]  # one spot, one label
    legend = pareto.get_legend().get_window_extent(renderer)
    assert not any(box.overlaps(legend) for box in boxes)


def test_pareto_legend_names_only_what_is_drawn() -> None:
    records = []
    for r in make_records(n_prompts=12, trials=1):
        if r["config"] == "baseline":  # follows everything at the best quality: the frontier is this one point
            n = len(r["instruction_id_list"])
            r = r | {"strict": [True] * n, "loose": [True] * n, "follow_all_strict": True, "follow_all_loose": True, "quality": 0.0}
        records.append(r)
    _, _, pareto = trade_off_figure(RunResults.from_records(make_run(n_prompts=12, trials=1), records, seed=0)).axes
    assert [t.get_text() for t in pareto.get_legend().get_texts()] == ["steered", "baseline (unsteered)"]
    assert not [line for line in pareto.get_lines() if line.get_label() == "Pareto frontier"]


def _point(name: str, accuracy: float, quality: float) -> Point:
    return Point(name, Interval(accuracy, accuracy, accuracy, 1), Interval(quality, quality, quality, 1), name == "b")


def test_pareto_frontier_keeps_only_undominated_points() -> None:
    points = [_point("b", 0.5, -1.0), _point("a", 0.7, -1.5), _point("c", 0.6, -2.0), _point("d", 0.7, -1.2)]
    assert [p.name for p in pareto_frontier(points)] == ["b", "d"]


def test_heatmap_shows_follow_rate_per_instruction_and_config(results: RunResults) -> None:
    figure = instruction_heatmap_figure(results)
    ax = figure.axes[0]
    ids = [t.get_text() for t in ax.get_yticklabels()]
    assert ids == sorted({iid for agg in results.aggregates for iid in agg.per_instruction})
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "α=5", "α=10", "α=30"]
    assert "stronger steering" in ax.get_xlabel()
    image = ax.get_images()[0].get_array()
    for row, iid in enumerate(ids):
        for column, agg in enumerate(results.aggregates):
            assert image[row, column] == agg.per_instruction[iid]["strict"].mean


def test_heatmap_has_a_quality_panel(results: RunResults) -> None:
    figure = instruction_heatmap_figure(results)
    follow, quality = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert "quality" in quality.get_title()
    ids = [t.get_text() for t in follow.get_yticklabels()]
    image = quality.get_images()[0].get_array()
    for row, iid in enumerate(ids):
        for column, agg in enumerate(results.aggregates):
            assert image[row, column] == pytest.approx(instruction_quality(agg, iid).mean)


def test_instruction_delta_figure_has_a_bar_per_alpha_and_id(results: RunResults) -> None:
    deltas = instruction_deltas_vs_baseline(results.aggregates, min_prompts=results.min_prompts)
    figure = instruction_delta_figure(results)
    follow, quality = figure.axes[:2]
    assert "follow rate" in follow.get_title() and "quality" in quality.get_title()
    ids = [t.get_text() for t in follow.get_yticklabels()]
    assert ids == sorted({iid for per_id in deltas.values() for iid in per_id})
    bars = [c for c in follow.containers if hasattr(c, "patches")]
    assert [c.get_label() for c in bars] == ["α=5", "α=10", "α=30"]
    for container, name in zip(bars, ["alpha5", "alpha10", "alpha30"]):
        widths = [patch.get_width() for patch in container.patches]
        assert widths == pytest.approx([deltas[name][iid]["follow_rate"].mean for iid in ids])


def test_figures_without_quality_or_steering_say_so() -> None:
    records = [dict(r, quality=None) for r in make_records(n_prompts=3, trials=1) if r["alpha"] is None]
    results = RunResults.from_records(make_run(n_prompts=3, trials=1), records, seed=0)
    accuracy, quality, pareto = trade_off_figure(results).axes
    assert [t.get_text() for t in accuracy.texts] == ["no steered config in this run"]
    assert [t.get_text() for t in quality.texts] == ["no quality scores in this run"]
    assert [t.get_text() for t in pareto.texts] == ["needs accuracy and quality"]
    assert not math.isnan(accuracy.get_lines()[0].get_ydata()[0])  # the baseline reference is still drawn
    assert [t.get_text() for t in instruction_delta_figure(results).axes[0].texts] == ["no steered config with a baseline to compare with"]


def test_png_bytes_are_a_png(results: RunResults) -> None:
    assert png_bytes(instruction_heatmap_figure(results)).startswith(b"\x89PNG\r\n\x1a\n")


def test_methods_without_a_strength_have_their_own_place() -> None:
    results = make_method_results()
    accuracy, quality, _ = trade_off_figure(results).axes
    labels = [t.get_text() for t in accuracy.get_xticklabels()]
    assert labels == ["10", "emphasis", "myvec"]
    assert [t.get_text() for t in quality.get_xticklabels()] == labels
    by_name = {agg.name: agg for agg in results.aggregates}
    strict = [c for c in accuracy.containers if c.get_label() in ("strict prompt", "_nolegend_")][:2]
    pasta, others = (container.lines[0].get_ydata() for container in strict)
    assert list(pasta) == pytest.approx([by_name["alpha10"].metrics["strict_prompt_accuracy"].mean])
    assert list(others) == pytest.approx([by_name[n].metrics["strict_prompt_accuracy"].mean for n in ("emphasis", "myvec")])


def test_a_method_swept_over_one_parameter_is_a_strength_series_of_its_own() -> None:
    base = make_method_results()
    records = [r for r in base.records if r["config"] != "myvec"]
    coeffs = {"actadd_layer15_coeff4": 4.0, "actadd_layer15_coeff1": 1.0, "actadd_layer15_coeff2": 2.0}  # out of order on purpose
    for name, coeff in coeffs.items():
        records += [
            r | {"config": name, "method": "actadd", "alpha": None, "quality": r["quality"] - coeff}
            for r in base.records
            if r["config"] == "alpha10"
        ]
    steering = {**base.run["steering"], **{n: {"method": "actadd", "params": {"layer": 15, "coeff": c}} for n, c in coeffs.items()}}
    results = RunResults.from_records(base.run | {"steering": steering}, records, seed=0)
    accuracy, quality, _ = trade_off_figure(results).axes
    labels = ["10", "actadd coeff=1", "actadd coeff=2", "actadd coeff=4", "emphasis"]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == labels
    assert [t.get_text() for t in quality.get_xticklabels()] == labels
    assert accuracy.get_xlabel() == "steering strength: PASTA alpha, actadd coeff"
    by_name = {agg.name: agg for agg in results.aggregates}
    actadd = [c.lines[0] for c in quality.containers if len(c.lines[0].get_xdata()) == 3]
    assert len(actadd) == 1 and actadd[0].get_linestyle() == "-"  # one line through the three coefficients, in order
    expected = [by_name[f"actadd_layer15_coeff{c}"].metrics["quality"].mean for c in (1, 4, 2)]
    assert list(actadd[0].get_ydata()) == pytest.approx(sorted(expected, reverse=True))


def test_a_method_swept_over_two_parameters_is_placed_by_name() -> None:
    base = make_method_results()
    grid = {"actadd_a": {"layer": 14, "coeff": 1.0}, "actadd_b": {"layer": 15, "coeff": 2.0}}
    records = [r for r in base.records if r["config"] in ("baseline", "alpha10")]
    for name in grid:
        records += [r | {"config": name, "method": "actadd", "alpha": None} for r in base.records if r["config"] == "alpha10"]
    steering = {**base.run["steering"], **{n: {"method": "actadd", "params": p} for n, p in grid.items()}}
    results = RunResults.from_records(base.run | {"steering": steering}, records, seed=0)
    accuracy = trade_off_figure(results).axes[0]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["10", "actadd_a", "actadd_b"]


def test_a_run_of_methods_without_strength_draws_them_by_name() -> None:
    results = make_method_results()
    results = RunResults.from_records(results.run, [r for r in results.records if r["config"] != "alpha10"], seed=0)
    accuracy = trade_off_figure(results).axes[0]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["emphasis", "myvec"]
    assert not accuracy.texts  # no "no steered config" note


def test_a_baseline_only_report_skips_the_delta_figure(tmp_path) -> None:
    from pytest_steer.report.files import write_report

    whole = RunResults.from_records(make_run(n_prompts=3, trials=1), make_records(n_prompts=3, trials=1), seed=0)
    write_report(whole, tmp_path)
    assert (tmp_path / "instruction_deltas.png").is_file()
    baseline = RunResults.from_records(make_run(n_prompts=3, trials=1), [r for r in whole.records if r["alpha"] is None], seed=0)
    written = write_report(baseline, tmp_path)
    assert "instruction_deltas.png" not in [p.name for p in written]
    assert not (tmp_path / "instruction_deltas.png").exists()  # the earlier run's figure is gone
    assert "instruction_deltas.png not drawn: no steered config" in (tmp_path / "report.html").read_text()

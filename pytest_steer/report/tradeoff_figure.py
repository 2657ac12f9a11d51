"""The trade-off figure: accuracy vs steering strength, quality vs steering strength, and quality vs
strict prompt accuracy (:mod:`pytest_steer.report.pareto_panel`).

Error bars are the 95% CIs over prompts; the unsteered baseline is drawn as a reference line
with its CI band (it has no strength). Every steered config has a place on the strength axis:
PASTA at its alpha; a method run at several values of one numeric parameter
(``actadd:coeff=1,2,4``) as a series of its own to the right, labelled by that parameter's
values; any other config at a position of its own, labelled by its name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from pytest_steer.report.pareto_panel import FRONTIER_METRIC, pareto_panel, place_point_labels, trade_off_points
from pytest_steer.report.plotting import BASELINE_COLOR, QUALITY_COLOR, defined, empty_note, error_bars, new_figure
from pytest_steer.report.table import METRIC_TITLES
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import ACCURACY_METRICS, QUALITY_METRIC

ALPHA_LABEL = "PASTA alpha (larger = stronger steering)"
PASTA = "pasta"
ACCURACY_STYLES = {
    "strict_prompt_accuracy": ("tab:blue", "-", "o"),
    "strict_instruction_accuracy": ("tab:orange", "-", "s"),
    "loose_prompt_accuracy": ("tab:blue", "--", "o"),
    "loose_instruction_accuracy": ("tab:orange", "--", "s"),
}
DODGE_POINTS = 4.0  # horizontal shift between the accuracy series, so their error bars do not hide each other


@dataclass(frozen=True)
class Placed:
    """A steered config's position on the strength axis of the accuracy and quality panels."""

    agg: ConfigAggregate
    x: float
    label: str
    series: str | None  # the method whose strength series holds this config (one line each); None: placed alone
    axis: str = ""  # the series' strength parameter, e.g. "actadd coeff"


def _pasta(results: RunResults) -> list[Placed]:
    """PASTA's configs, at their alpha."""
    return [Placed(agg, float(agg.alpha), f"{agg.alpha:g}", PASTA, "PASTA alpha") for agg in results.aggregates if agg.alpha is not None]


def strength_series(results: RunResults) -> dict[str, tuple[str, dict[str, float]]]:
    """Method -> (its swept parameter, config name -> value), for each method besides PASTA whose
    configs in this run differ in exactly one parameter, a numeric one (``actadd:layer=15,coeff=1,2,4``)."""
    steering = results.run.get("steering") or {}
    names_of: dict[str, list[str]] = {}
    for agg in results.aggregates:
        if agg.method is not None and agg.alpha is None:
            names_of.setdefault(agg.method, []).append(agg.name)
    series = {}
    for method, names in names_of.items():
        params = [(steering.get(name) or {}).get("params") or {} for name in names]
        keys = {key for p in params for key in p}
        varying = [key for key in sorted(keys) if len({json.dumps(p.get(key), sort_keys=True) for p in params}) > 1]
        if len(names) < 2 or len(varying) != 1:
            continue
        values = [p.get(varying[0]) for p in params]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            series[method] = (varying[0], {name: float(v) for name, v in zip(names, values)})
    return series


def _beside_alphas(results: RunResults, alphas: list[float]) -> list[Placed]:
    """The steered configs besides PASTA's, one position each right of the alphas: each strength
    series in the order of its values, then the configs placed alone (emphasis, registered methods)."""
    series = strength_series(results)
    others = [agg for agg in results.aggregates if not agg.is_baseline and agg.alpha is None]
    ordered: list[tuple[ConfigAggregate, str, str | None, str]] = []
    for method, (key, values) in series.items():
        members = sorted((agg for agg in others if agg.method == method), key=lambda agg: values[agg.name])
        ordered += [(agg, f"{method} {key}={values[agg.name]:g}", method, f"{method} {key}") for agg in members]
    ordered += [(agg, agg.name, None, "") for agg in others if agg.method not in series]
    if not alphas:
        positions = [float(number) for number in range(1, len(ordered) + 1)]
    elif _log_scale(alphas):
        positions = [max(alphas) * 2.0**number for number in range(1, len(ordered) + 1)]
    else:
        low, high = min(alphas), max(alphas)
        step = (high - low) / max(len(alphas) - 1, 1) or max(abs(high), 1.0)
        positions = [high + step * number for number in range(1, len(ordered) + 1)]
    return [Placed(agg, x, label, method, axis) for (agg, label, method, axis), x in zip(ordered, positions)]


def placements(results: RunResults) -> list[Placed]:
    """Every steered config on the strength axis, method by method."""
    pasta = _pasta(results)
    return pasta + _beside_alphas(results, [p.x for p in pasta])


def _log_scale(alphas: list[float]) -> bool:
    return bool(alphas) and min(alphas) > 0 and max(alphas) / min(alphas) >= 10


def _baseline(results: RunResults) -> ConfigAggregate | None:
    return next((agg for agg in results.aggregates if agg.is_baseline), None)


def _strength_axis(ax: Axes, placed: list[Placed]) -> None:
    """Ticks at the alphas run (log scale when they span a decade) and at the other configs' own
    positions, with a divider between methods; limits set here because the dodged series do not
    take part in autoscaling."""
    ax.set_xlabel(_strength_label(placed))
    if not placed:
        return
    xs = [p.x for p in placed]
    low, high = min(xs), max(xs)
    alphas = [p.x for p in placed if p.series == PASTA]
    if _log_scale(alphas):
        ax.set_xscale("log")
        ax.set_xlim(low / 1.3, high * 1.3)
    else:
        pad = 0.1 * (high - low) if high > low else 0.5 * max(abs(low), 1.0)
        ax.set_xlim(low - pad, high + pad)
    ax.set_xticks(xs)
    ax.set_xticklabels([p.label for p in placed], rotation=0 if len(alphas) == len(placed) else 30, ha="right")
    ax.minorticks_off()
    for before, after in zip(placed, placed[1:]):
        if before.series != after.series and (before.series is not None or after.series is not None):
            divider = math.sqrt(before.x * after.x) if ax.get_xscale() == "log" else (before.x + after.x) / 2
            ax.axvline(divider, color="lightgrey", linewidth=0.8)


def _strength_label(placed: list[Placed]) -> str:
    axes = list(dict.fromkeys(p.axis for p in placed if p.axis))
    return ALPHA_LABEL if axes in ([], ["PASTA alpha"]) else "steering strength: " + ", ".join(axes)


def _baseline_reference(ax: Axes, interval: Interval | None, color: str, label: str) -> None:
    if interval is None:
        return
    ax.axhline(interval.mean, color=color, linestyle=":", linewidth=1.2, label=label)
    ax.axhspan(interval.ci_low, interval.ci_high, color=color, alpha=0.08, linewidth=0)


def _strength_errorbar(ax: Axes, placed: list[Placed], metric: str, *, label: str, linestyle: str = "-", **style: Any) -> bool:
    """One metric of every placed config with CI error bars: a line through each strength series,
    markers alone for configs placed by name; the legend names the metric once. False when nothing has a value."""
    plotted = False
    for series in dict.fromkeys(p.series for p in placed):
        points = [(p.x, interval) for p in placed if p.series == series and (interval := defined(p.agg, metric)) is not None]
        if not points:
            continue
        ax.errorbar(
            [x for x, _ in points],
            [interval.mean for _, interval in points],
            yerr=error_bars([interval for _, interval in points]),
            capsize=3,
            linestyle=linestyle if series is not None else "none",
            label=label if not plotted else "_nolegend_",
            **style,
        )
        plotted = True
    return plotted


def _accuracy_panel(ax: Axes, results: RunResults) -> None:
    placed = placements(results)
    baseline = _baseline(results)
    for index, metric in enumerate(ACCURACY_METRICS):
        color, linestyle, marker = ACCURACY_STYLES[metric]
        shift = (index - (len(ACCURACY_METRICS) - 1) / 2) * DODGE_POINTS
        _strength_errorbar(
            ax,
            placed,
            metric,
            color=color,
            linestyle=linestyle,
            marker=marker,
            label=METRIC_TITLES[metric],
            transform=offset_copy(ax.transData, fig=ax.figure, x=shift, units="points"),
        )
        if baseline is not None and metric == FRONTIER_METRIC:
            _baseline_reference(ax, defined(baseline, metric), BASELINE_COLOR, "baseline (unsteered), strict prompt")
    ax.set_ylabel("accuracy (fraction followed)")
    ax.set_title("instruction following vs steering strength")
    ax.set_ylim(-0.02, 1.02)
    _strength_axis(ax, placed)
    if not placed:
        empty_note(ax, "no steered config in this run")
    if ax.get_legend_handles_labels()[0]:  # nothing labelled when no config was evaluated
        ax.legend(fontsize="small", loc="best")


def _quality_panel(ax: Axes, results: RunResults) -> None:
    placed = placements(results)
    baseline = _baseline(results)
    plotted = _strength_errorbar(ax, placed, QUALITY_METRIC, color=QUALITY_COLOR, marker="o", label="steered")
    baseline_quality = defined(baseline, QUALITY_METRIC) if baseline is not None else None
    _baseline_reference(ax, baseline_quality, BASELINE_COLOR, "baseline (unsteered)")
    ax.set_ylabel("quality (higher is better)")
    ax.set_title("response quality vs steering strength")
    _strength_axis(ax, placed)
    if not plotted and baseline_quality is None:
        empty_note(ax, "no quality scores in this run")
    else:
        ax.legend(fontsize="small", loc="best")


def _title(results: RunResults) -> str:
    model = (results.run.get("model") or {}).get("name", "?")
    n_prompts = (results.run.get("dataset") or {}).get("n_prompts", "?")
    trials = (results.run.get("generation") or {}).get("trials", "?")
    return f"{model}: {n_prompts} prompts × {trials} trial(s); error bars: 95% CI over prompts"


def trade_off_figure(results: RunResults) -> Figure:
    """Three panels: accuracy vs alpha, quality vs alpha, quality vs accuracy."""
    figure = new_figure(16, 5)
    accuracy_ax, quality_ax, pareto_ax = figure.subplots(1, 3)
    _accuracy_panel(accuracy_ax, results)
    _quality_panel(quality_ax, results)
    pareto_panel(pareto_ax, results)
    figure.suptitle(_title(results), fontsize="medium")
    place_point_labels(pareto_ax, trade_off_points(results))
    return figure

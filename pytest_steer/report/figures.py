"""Figures of the trade-off (PNG through matplotlib's Agg canvas; pyplot's global state is never touched).

* :func:`trade_off_figure`: accuracy vs alpha, quality vs alpha, and quality vs strict
  prompt accuracy with the Pareto frontier (each point named where the name covers no other,
  see :func:`place_point_labels`); error bars are the 95% CIs over prompts and
  the unsteered baseline is drawn as a reference line with its CI band (it has no alpha).
  Every steered config has a place on the strength axis: PASTA at its alpha; a method run
  at several values of one numeric parameter (``actadd:coeff=1,2,4``) as a series of its own
  to the right, labelled by that parameter's values; any other config at a position of its
  own, labelled by its name.
* :func:`instruction_heatmap_figure`: strict follow rate and mean quality per instruction
  id × config.
* :func:`instruction_delta_figure`: per instruction id, the paired change from the
  baseline of the strict follow rate and of quality, one bar per alpha with its 95% CI; a
  change over too few prompts for an interval gets a note instead of a bar.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox, blended_transform_factory, offset_copy

from pytest_steer.report.table import METRIC_TITLES
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import (
    ACCURACY_METRICS,
    MIN_INTERVAL_PROMPTS,
    QUALITY_METRIC,
    ConfigAggregate,
    instruction_quality,
    not_estimable,
)
from pytest_steer.stats.bootstrap import Interval

ALPHA_LABEL = "PASTA alpha (larger = stronger steering)"
PASTA = "pasta"
ACCURACY_STYLES = {
    "strict_prompt_accuracy": ("tab:blue", "-", "o"),
    "strict_instruction_accuracy": ("tab:orange", "-", "s"),
    "loose_prompt_accuracy": ("tab:blue", "--", "o"),
    "loose_instruction_accuracy": ("tab:orange", "--", "s"),
}
QUALITY_COLOR = "tab:green"
BASELINE_COLOR = "black"
FRONTIER_METRIC = "strict_prompt_accuracy"
DODGE_POINTS = 4.0  # horizontal shift between the accuracy series, so their error bars do not hide each other
DPI = 110


@dataclass(frozen=True)
class Placed:
    """A steered config's position on the strength axis of the accuracy and quality panels."""

    agg: ConfigAggregate
    x: float
    label: str
    series: str | None  # the method whose strength series holds this config (one line each); None: placed alone
    axis: str = ""  # the series' strength parameter, e.g. "actadd coeff"


@dataclass(frozen=True)
class Point:
    """One config's position on the quality-vs-accuracy panel."""

    name: str
    accuracy: Interval
    quality: Interval
    is_baseline: bool


def _defined(agg: ConfigAggregate, metric: str) -> Interval | None:
    interval = agg.metrics.get(metric)
    return interval if interval is not None and interval.is_defined else None


def _errors(intervals: list[Interval]) -> list[list[float]]:
    """Asymmetric error-bar lengths below and above each mean."""
    return [[iv.mean - iv.ci_low for iv in intervals], [iv.ci_high - iv.mean for iv in intervals]]


def pareto_frontier(points: list[Point]) -> list[Point]:
    """Points no other point beats on both accuracy and quality (higher is better), by accuracy."""
    frontier = []
    for p in points:
        dominated = any(
            q.accuracy.mean >= p.accuracy.mean
            and q.quality.mean >= p.quality.mean
            and (q.accuracy.mean > p.accuracy.mean or q.quality.mean > p.quality.mean)
            for q in points
        )
        if not dominated:
            frontier.append(p)
    return sorted(frontier, key=lambda p: (p.accuracy.mean, -p.quality.mean))


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


def _empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def _strength_errorbar(ax: Axes, placed: list[Placed], metric: str, *, label: str, linestyle: str = "-", **style: Any) -> bool:
    """One metric of every placed config with CI error bars: a line through each strength series,
    markers alone for configs placed by name; the legend names the metric once. False when nothing has a value."""
    plotted = False
    for series in dict.fromkeys(p.series for p in placed):
        points = [(p.x, interval) for p in placed if p.series == series and (interval := _defined(p.agg, metric)) is not None]
        if not points:
            continue
        ax.errorbar(
            [x for x, _ in points],
            [interval.mean for _, interval in points],
            yerr=_errors([interval for _, interval in points]),
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
            _baseline_reference(ax, _defined(baseline, metric), BASELINE_COLOR, "baseline (unsteered), strict prompt")
    ax.set_ylabel("accuracy (fraction followed)")
    ax.set_title("instruction following vs steering strength")
    ax.set_ylim(-0.02, 1.02)
    _strength_axis(ax, placed)
    if not placed:
        _empty_note(ax, "no steered config in this run")
    if ax.get_legend_handles_labels()[0]:  # nothing labelled when no config was evaluated
        ax.legend(fontsize="small", loc="best")


def _quality_panel(ax: Axes, results: RunResults) -> None:
    placed = placements(results)
    baseline = _baseline(results)
    plotted = _strength_errorbar(ax, placed, QUALITY_METRIC, color=QUALITY_COLOR, marker="o", label="steered")
    baseline_quality = _defined(baseline, QUALITY_METRIC) if baseline is not None else None
    _baseline_reference(ax, baseline_quality, BASELINE_COLOR, "baseline (unsteered)")
    ax.set_ylabel("quality (higher is better)")
    ax.set_title("response quality vs steering strength")
    _strength_axis(ax, placed)
    if not plotted and baseline_quality is None:
        _empty_note(ax, "no quality scores in this run")
    else:
        ax.legend(fontsize="small", loc="best")


def trade_off_points(results: RunResults) -> list[Point]:
    points = []
    for agg in results.aggregates:
        accuracy, quality = _defined(agg, FRONTIER_METRIC), _defined(agg, QUALITY_METRIC)
        if accuracy is not None and quality is not None:
            points.append(Point(agg.name, accuracy, quality, agg.is_baseline))
    return points


def _pareto_panel(ax: Axes, results: RunResults) -> None:
    points = trade_off_points(results)
    ax.set_xlabel("strict prompt accuracy")
    ax.set_ylabel("quality (higher is better)")
    ax.set_title("quality vs accuracy (up and right is better)")
    if not points:
        _empty_note(ax, "needs accuracy and quality")
        return
    frontier = pareto_frontier(points)
    if len(frontier) > 1:  # a frontier of one point is no line: nothing to draw, nothing to name in the legend
        ax.plot(
            [p.accuracy.mean for p in frontier],
            [p.quality.mean for p in frontier],
            color="grey",
            linestyle="--",
            linewidth=1,
            label="Pareto frontier",
        )
    for group, color, marker, label in (
        ([p for p in points if not p.is_baseline], QUALITY_COLOR, "o", "steered"),
        ([p for p in points if p.is_baseline], BASELINE_COLOR, "*", "baseline (unsteered)"),
    ):
        if not group:
            continue
        ax.errorbar(
            [p.accuracy.mean for p in group],
            [p.quality.mean for p in group],
            xerr=_errors([p.accuracy for p in group]),
            yerr=_errors([p.quality for p in group]),
            color=color,
            marker=marker,
            markersize=10 if marker == "*" else 6,
            linestyle="none",
            capsize=3,
            label=label,
        )
    ax.legend(fontsize="small", loc="best")


# Where a point's name may go, in points from the point: beside it first, then further out along
# eight directions; the first place that covers no other name, marker or the legend wins.
LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
LABEL_DISTANCES = (5.0, 14.0, 24.0, 36.0, 50.0)
MARKER_HALF = 5.0  # half the side of the box kept free around each marker, in points


def place_point_labels(ax: Axes, points: list[Point]) -> None:
    """Name every point of the Pareto panel where the name overlaps no other name, marker or the legend.

    Positions are measured on the laid-out figure, so call it once every panel is drawn.
    Configs on the same spot share one label; a label moved away from its point gets a thin
    line to it; where nothing is free, a label goes where it overlaps least.
    """
    spots: dict[tuple[float, float], list[Point]] = {}
    for point in sorted(points, key=lambda p: not p.is_baseline):
        spots.setdefault((point.accuracy.mean, point.quality.mean), []).append(point)
    if not spots:
        return
    figure = ax.figure
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    half = MARKER_HALF * figure.dpi / 72.0
    markers = [ax.transData.transform(xy) for xy in spots]
    taken = [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in markers]
    legend = ax.get_legend()
    if legend is not None:
        box = legend.get_window_extent(renderer)
        taken.append(box)
        legend.set_loc(tuple(ax.transAxes.inverted().transform((box.x0, box.y0))))  # "best" would dodge the names next
    for index, (xy, group) in enumerate(spots.items()):
        text = ", ".join(point.name for point in group)
        others = [box for i, box in enumerate(taken) if i != index]
        probe = ax.annotate(text, xy, xytext=(0.0, 0.0), textcoords="offset points", fontsize="small")
        best_cost, best_offset, best_box = math.inf, (0.0, 0.0), Bbox.null()
        for offset in ((dx * distance, dy * distance) for distance in LABEL_DISTANCES for dx, dy in LABEL_DIRECTIONS):
            _aim(probe, offset)
            box = probe.get_window_extent(renderer)
            cost = sum(_overlap(box, other) for other in others) + _outside(box, axes_box)
            if cost < best_cost:
                best_cost, best_offset, best_box = cost, offset, box
            if cost == 0:
                break
        probe.remove()
        far = math.hypot(*best_offset) > LABEL_DISTANCES[0] * math.sqrt(2)
        arrow = {"arrowstyle": "-", "color": "grey", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3} if far else None
        label = ax.annotate(text, xy, xytext=best_offset, textcoords="offset points", fontsize="small", arrowprops=arrow)
        label.set_in_layout(False)  # placed on the laid-out figure: it must not move the layout
        _aim(label, best_offset)
        taken.append(best_box)


def _aim(label: Any, offset: tuple[float, float]) -> None:
    """Put a label ``offset`` points from its point, its near corner or edge towards the point."""
    dx, dy = offset
    label.set_position(offset)
    label.set_horizontalalignment("left" if dx > 0 else "right" if dx < 0 else "center")
    label.set_verticalalignment("bottom" if dy > 0 else "top" if dy < 0 else "center")


def _overlap(a: Bbox, b: Bbox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def _outside(box: Bbox, bounds: Bbox) -> float:
    """The area of ``box`` outside ``bounds``."""
    return box.width * box.height - _overlap(box, bounds)


def _title(results: RunResults) -> str:
    model = (results.run.get("model") or {}).get("name", "?")
    n_prompts = (results.run.get("dataset") or {}).get("n_prompts", "?")
    trials = (results.run.get("generation") or {}).get("trials", "?")
    return f"{model}: {n_prompts} prompts × {trials} trial(s); error bars: 95% CI over prompts"


def trade_off_figure(results: RunResults) -> Figure:
    """Three panels: accuracy vs alpha, quality vs alpha, quality vs accuracy."""
    figure = Figure(figsize=(16, 5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_ax, quality_ax, pareto_ax = figure.subplots(1, 3)
    _accuracy_panel(accuracy_ax, results)
    _quality_panel(quality_ax, results)
    _pareto_panel(pareto_ax, results)
    figure.suptitle(_title(results), fontsize="medium")
    place_point_labels(pareto_ax, trade_off_points(results))
    return figure


def config_label(agg: ConfigAggregate) -> str:
    if agg.is_baseline:
        return "baseline"
    return f"α={agg.alpha:g}" if agg.alpha is not None else agg.name


def _value(interval: Interval | None) -> float:
    return interval.mean if interval is not None and interval.is_defined else math.nan


def follow_rate_matrix(results: RunResults) -> tuple[list[str], list[str], list[list[float]]]:
    """Instruction ids (rows), config labels (columns) and the strict follow rates (NaN: no prompt)."""
    ids = sorted({iid for agg in results.aggregates for iid in agg.per_instruction})
    labels = [config_label(agg) for agg in results.aggregates]
    matrix = [[_value(agg.per_instruction.get(iid, {}).get("strict")) for agg in results.aggregates] for iid in ids]
    return ids, labels, matrix


def quality_matrix(results: RunResults, ids: list[str]) -> list[list[float]]:
    """Mean quality over the prompts holding each instruction id, per config (NaN: none scored)."""
    return [[_value(instruction_quality(agg, iid)) for agg in results.aggregates] for iid in ids]


def _heatmap(ax: Axes, matrix: list[list[float]], labels: list[str], ids: list[str], cmap: str, **scale: Any) -> Any:
    image = ax.imshow(matrix, cmap=colormaps[cmap].with_extremes(bad="lightgrey"), aspect="auto", **scale)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_yticks(range(len(ids)))
    ax.set_yticklabels(ids, fontsize="small")
    for row, values in enumerate(matrix):
        for column, value in enumerate(values):
            if not math.isnan(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize="x-small")
    return image


def instruction_heatmap_figure(results: RunResults) -> Figure:
    ids, labels, matrix = follow_rate_matrix(results)
    quality = quality_matrix(results, ids)
    has_quality = any(not math.isnan(v) for row in quality for v in row)
    height = 1.6 + 0.32 * max(len(ids), 1)
    width = (4.5 + 0.9 * max(len(labels), 1)) * (2 if has_quality else 1)
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if has_quality else 1, squeeze=False)[0]
    axes[0].set_title("strict follow rate per instruction id")
    axes[0].set_ylabel("instruction id")
    for ax in axes:
        ax.set_xlabel("config (left to right: unsteered, then larger alpha = stronger steering)")
    if not ids:
        _empty_note(axes[0], "no instruction verdicts in this run")
        return figure
    image = _heatmap(axes[0], matrix, labels, ids, "RdYlGn", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes[0], label="follow rate")
    if has_quality:
        axes[1].set_title(f"mean {METRIC_TITLES[QUALITY_METRIC]} of the prompts holding it")
        image = _heatmap(axes[1], quality, labels, ids, "viridis")
        axes[1].set_yticklabels([])
        figure.colorbar(image, ax=axes[1], label=METRIC_TITLES[QUALITY_METRIC])
    return figure


DELTA_PANELS = (("follow_rate", "Δ strict follow rate vs baseline"), (QUALITY_METRIC, "Δ quality vs baseline"))


def instruction_delta_figure(results: RunResults) -> Figure:
    """Per instruction id (rows), one horizontal bar per steered config: the paired change from the baseline."""
    deltas = results.instruction_deltas()
    steered = [agg for agg in results.aggregates if not agg.is_baseline and agg.name in deltas]
    ids = sorted({iid for per_id in deltas.values() for iid in per_id})
    panels = [(key, title) for key, title in DELTA_PANELS if any(key in m for d in deltas.values() for m in d.values())]
    height = 1.8 + 0.22 * max(len(ids), 1) * max(len(steered), 1)
    figure = Figure(figsize=(5.0 * max(len(panels), 1) + 1.5, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    if not ids or not panels:
        _empty_note(figure.subplots(), "no steered config with a baseline to compare with")
        return figure
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    band = 0.8 / len(steered)
    colors = colormaps["viridis"]
    for ax, (key, title) in zip(axes, panels):
        notes = blended_transform_factory(ax.transAxes, ax.transData)  # at the panel's left edge, on the bar's row
        for number, agg in enumerate(steered):
            rows, means, errors = [], [], [[], []]
            for row, iid in enumerate(ids):
                interval = deltas[agg.name].get(iid, {}).get(key)
                y = row - 0.4 + band * (number + 0.5)
                if interval is not None and not_estimable(interval):  # no bar: it would look like a sure change
                    note = f"{config_label(agg)}: n={interval.n_prompts}, not estimable"
                    ax.text(0.01, y, note, transform=notes, va="center", fontsize="x-small", color="grey")
                if interval is None or not interval.is_defined:
                    continue
                rows.append(y)
                means.append(interval.mean)
                errors[0].append(interval.mean - interval.ci_low)
                errors[1].append(interval.ci_high - interval.mean)
            if rows:
                color = colors(number / max(len(steered) - 1, 1))
                ax.barh(rows, means, height=band * 0.9, xerr=errors, color=color, ecolor="black", capsize=1.5, label=config_label(agg))
        if not ax.containers:  # no bar to scale to: keep zero in the middle
            ax.set_xlim(-1.0, 1.0)
        ax.axvline(0.0, color=BASELINE_COLOR, linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("paired difference over the prompts holding the id, 95% CI")
    axes[0].set_yticks(range(len(ids)))
    axes[0].set_yticklabels(ids, fontsize="small")
    axes[0].set_ylim(len(ids) - 0.5, -0.5)  # first id on top; set, since notes take no part in autoscaling
    axes[0].set_ylabel("instruction id")
    minimum = max(results.min_prompts, MIN_INTERVAL_PROMPTS)
    figure.suptitle(f"a change over fewer than {minimum} prompts is not estimable: no bar (--steer-min-prompts)", fontsize="small")
    drawn = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    if drawn:  # beside the panels: inside, it would cover bars
        figure.legend(drawn.values(), drawn.keys(), title="steered config", fontsize="small", loc="outside right upper")
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

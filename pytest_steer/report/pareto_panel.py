"""The quality-vs-accuracy panel of the trade-off figure: one point per config with its 95% CIs, the
Pareto frontier through them, and each point named where the name covers no other
(:func:`place_point_labels`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.transforms import Bbox

from pytest_steer.report.plotting import BASELINE_COLOR, QUALITY_COLOR, defined, empty_note, error_bars
from pytest_steer.run.results import RunResults
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import QUALITY_METRIC

FRONTIER_METRIC = "strict_prompt_accuracy"

# Where a point's name may go, in points from the point: beside it first, then further out along
# eight directions; the first place that covers no other name, marker or the legend wins.
LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
LABEL_DISTANCES = (5.0, 14.0, 24.0, 36.0, 50.0)
MARKER_HALF = 5.0  # half the side of the box kept free around each marker, in points


@dataclass(frozen=True)
class Point:
    """One config's position on the quality-vs-accuracy panel."""

    name: str
    accuracy: Interval
    quality: Interval
    is_baseline: bool


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


def trade_off_points(results: RunResults) -> list[Point]:
    points = []
    for agg in results.aggregates:
        accuracy, quality = defined(agg, FRONTIER_METRIC), defined(agg, QUALITY_METRIC)
        if accuracy is not None and quality is not None:
            points.append(Point(agg.name, accuracy, quality, agg.is_baseline))
    return points


def pareto_panel(ax: Axes, results: RunResults) -> None:
    points = trade_off_points(results)
    ax.set_xlabel("strict prompt accuracy")
    ax.set_ylabel("quality (higher is better)")
    ax.set_title("quality vs accuracy (up and right is better)")
    if not points:
        empty_note(ax, "needs accuracy and quality")
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
            xerr=error_bars([p.accuracy for p in group]),
            yerr=error_bars([p.quality for p in group]),
            color=color,
            marker=marker,
            markersize=10 if marker == "*" else 6,
            linestyle="none",
            capsize=3,
            label=label,
        )
    ax.legend(fontsize="small", loc="best")


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

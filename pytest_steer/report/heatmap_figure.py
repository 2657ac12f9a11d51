"""The per-instruction heatmap: strict follow rate and mean quality per instruction id × config."""

from __future__ import annotations

import math
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pytest_steer.report.plotting import config_label, empty_note, new_figure
from pytest_steer.report.table import METRIC_TITLES
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import instruction_quality
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import QUALITY_METRIC


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
    figure = new_figure(width, height)
    axes = figure.subplots(1, 2 if has_quality else 1, squeeze=False)[0]
    axes[0].set_title("strict follow rate per instruction id")
    axes[0].set_ylabel("instruction id")
    for ax in axes:
        ax.set_xlabel("config (left to right: unsteered, then larger alpha = stronger steering)")
    if not ids:
        empty_note(axes[0], "no instruction verdicts in this run")
        return figure
    image = _heatmap(axes[0], matrix, labels, ids, "RdYlGn", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes[0], label="follow rate")
    if has_quality:
        axes[1].set_title(f"mean {METRIC_TITLES[QUALITY_METRIC]} of the prompts holding it")
        image = _heatmap(axes[1], quality, labels, ids, "viridis")
        axes[1].set_yticklabels([])
        figure.colorbar(image, ax=axes[1], label=METRIC_TITLES[QUALITY_METRIC])
    return figure

"""The per-instruction change figure: per instruction id, the paired change from the baseline of the
strict follow rate and of quality, one bar per steered config with its 95% CI; a change over too
few prompts for an interval gets a note instead of a bar."""

from __future__ import annotations

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from pytest_steer.report.plotting import BASELINE_COLOR, config_label, empty_note, new_figure
from pytest_steer.run.results import RunResults
from pytest_steer.stats.aggregate import MIN_INTERVAL_PROMPTS, not_estimable
from pytest_steer.stats.metrics import QUALITY_METRIC

DELTA_PANELS = (("follow_rate", "Δ strict follow rate vs baseline"), (QUALITY_METRIC, "Δ quality vs baseline"))


def instruction_delta_figure(results: RunResults) -> Figure:
    """Per instruction id (rows), one horizontal bar per steered config: the paired change from the baseline."""
    deltas = results.instruction_deltas()
    steered = [agg for agg in results.aggregates if not agg.is_baseline and agg.name in deltas]
    ids = sorted({iid for per_id in deltas.values() for iid in per_id})
    panels = [(key, title) for key, title in DELTA_PANELS if any(key in m for d in deltas.values() for m in d.values())]
    height = 1.8 + 0.22 * max(len(ids), 1) * max(len(steered), 1)
    figure = new_figure(5.0 * max(len(panels), 1) + 1.5, height)
    if not ids or not panels:
        empty_note(figure.subplots(), "no steered config with a baseline to compare with")
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

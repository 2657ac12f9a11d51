"""What every figure shares: a figure on matplotlib's Agg canvas (pyplot's global state is never
touched), its PNG bytes, the colours, the config labels and the small drawing helpers."""

from __future__ import annotations

import io

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.stats.bootstrap import Interval

QUALITY_COLOR = "tab:green"
BASELINE_COLOR = "black"
DPI = 110


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` × ``height`` inches on its own Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def defined(agg: ConfigAggregate, metric: str) -> Interval | None:
    """The config's interval of ``metric``, or None when it has no value."""
    interval = agg.metrics.get(metric)
    return interval if interval is not None and interval.is_defined else None


def error_bars(intervals: list[Interval]) -> list[list[float]]:
    """Asymmetric error-bar lengths below and above each mean."""
    return [[iv.mean - iv.ci_low for iv in intervals], [iv.ci_high - iv.mean for iv in intervals]]


def empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def config_label(agg: ConfigAggregate) -> str:
    if agg.is_baseline:
        return "baseline"
    return f"α={agg.alpha:g}" if agg.alpha is not None else agg.name

"""Head profiling's figure: each layer's lift (stage 1), and each head's lift in the layers stage 2 profiled."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from pytest_steer.report.plotting import empty_note, new_figure


def profile_figure(profile: Mapping[str, Any]) -> Figure:
    """Left: lift by layer with its elimination bounds; right: lift by layer × head (grey: not profiled)."""
    layers_stage, heads_stage = profile["stages"]
    num_layers, num_heads = profile["num_layers"], profile["num_heads"]
    figure = new_figure(11.0, 4.2)
    left, right = figure.subplots(1, 2, width_ratios=[1.3, 1.0])
    metric = profile["metric"].replace("_", " ")
    by_layer = {int(c["heads"]): c for c in layers_stage["candidates"] if c["lift"] is not None}
    if by_layer:
        layers = sorted(by_layer)
        means = [by_layer[layer]["lift"] for layer in layers]
        below = [m - (by_layer[layer]["ci_low"] if by_layer[layer]["ci_low"] is not None else m) for layer, m in zip(layers, means)]
        above = [(by_layer[layer]["ci_high"] if by_layer[layer]["ci_high"] is not None else m) - m for layer, m in zip(layers, means)]
        colors = ["tab:grey" if by_layer[layer]["dropped_at_look"] else "tab:blue" for layer in layers]
        left.bar(layers, means, yerr=[below, above], color=colors, capsize=2)
        left.axhline(0.0, color="black", linewidth=0.8)
    else:
        empty_note(left, "no layer was measured")
    left.set_xlabel("layer (every head steered; grey: dropped early)")
    left.set_ylabel(f"lift in {metric} over the baseline")
    left.set_title(f"stage 1: layers at alpha {profile['alpha']:g} (bars: the elimination bounds)")
    matrix = [[math.nan] * num_heads for _ in range(num_layers)]
    for candidate in heads_stage["candidates"]:
        if candidate["lift"] is None:
            continue
        (layer, heads), *_ = json.loads(candidate["heads"]).items()
        matrix[int(layer)][heads[0]] = candidate["lift"]
    profiled = sorted({int(next(iter(json.loads(c["heads"])))) for c in heads_stage["candidates"]})
    if profiled:
        rows = [matrix[layer] for layer in profiled]
        values = [abs(v) for row in rows for v in row if not math.isnan(v)] or [1.0]
        scale = max(values) or 1.0
        image = right.imshow(rows, cmap=colormaps["RdBu"].with_extremes(bad="lightgrey"), vmin=-scale, vmax=scale, aspect="auto")
        right.set_yticks(range(len(profiled)), [str(layer) for layer in profiled])
        right.set_xticks(range(num_heads))
        chosen = {(int(layer), head) for layer, heads in profile["heads"].items() for head in heads}
        for row, layer in enumerate(profiled):
            for head in range(num_heads):
                if (layer, head) in chosen:
                    right.text(head, row, "●", ha="center", va="center", fontsize="small")
        figure.colorbar(image, ax=right, label=f"lift in {metric}")
    else:
        empty_note(right, "no head was profiled")
    right.set_xlabel("head (●: in the chosen set)")
    right.set_ylabel("layer")
    right.set_title("stage 2: one head at a time")
    return figure

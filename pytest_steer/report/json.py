"""``results.json``: the run fingerprint, per-config aggregates and the case records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pytest_steer.results import SCHEMA_VERSION, RunResults


def results_dict(results: RunResults) -> dict[str, Any]:
    configs = []
    for agg in results.aggregates:
        entry = agg.to_dict()
        entry["delta_vs_baseline"] = {m: iv.to_dict() for m, iv in results.deltas.get(agg.name, {}).items()}
        configs.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "run": results.run,
        "configs": configs,
        "cases": results.records,
    }


def _strict_json(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


def write_results(results: RunResults, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_strict_json(results_dict(results)), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path

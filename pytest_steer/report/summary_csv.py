"""``summary.csv``: one row per config for spreadsheets and ``pandas.read_csv``.

Columns: ``config``, ``alpha`` (empty for the baseline), ``n_prompts``, ``n_cases``,
``n_errors``; for each metric ``M``: ``M``, ``M_ci_low``, ``M_ci_high``, ``M_n_prompts`` and
the paired difference from the baseline ``delta_M``, ``delta_M_ci_low``, ``delta_M_ci_high``
(empty for the baseline and for undefined values); then ``gates_passed`` and ``gates_failed``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pytest_steer.report.table import config_rows
from pytest_steer.run.results import RunResults
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.metrics import METRICS
from pytest_steer.store.atomic import atomic_open


def columns() -> list[str]:
    names = ["config", "alpha", "n_prompts", "n_cases", "n_errors"]
    for metric in METRICS:
        names += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_n_prompts"]
        names += [f"delta_{metric}", f"delta_{metric}_ci_low", f"delta_{metric}_ci_high"]
    return names + ["gates_passed", "gates_failed"]


def _value(value: float | None) -> float | str:
    return "" if value is None else value


def summary_rows(results: RunResults) -> list[dict[str, Any]]:
    rows = []
    for row in config_rows(results):
        out: dict[str, Any] = {
            "config": row.name,
            "alpha": _value(row.alpha),
            "n_prompts": row.n_prompts,
            "n_cases": row.n_cases,
            "n_errors": row.n_errors,
        }
        for metric in METRICS:
            value = _defined(row.values[metric])
            out[metric] = _value(value and value.mean)
            out[f"{metric}_ci_low"] = _value(value and value.ci_low)
            out[f"{metric}_ci_high"] = _value(value and value.ci_high)
            out[f"{metric}_n_prompts"] = 0 if row.values[metric] is None else row.values[metric].n_prompts
            delta = _defined(row.deltas.get(metric))
            out[f"delta_{metric}"] = _value(delta and delta.mean)
            out[f"delta_{metric}_ci_low"] = _value(delta and delta.ci_low)
            out[f"delta_{metric}_ci_high"] = _value(delta and delta.ci_high)
        out["gates_passed"] = row.verdicts.passed
        out["gates_failed"] = row.verdicts.failed
        rows.append(out)
    return rows


def _defined(interval: Interval | None) -> Interval | None:
    return interval if interval is not None and interval.is_defined else None


def write_summary_csv(results: RunResults, path: Path) -> Path:
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns())
        writer.writeheader()
        writer.writerows(summary_rows(results))
    return path

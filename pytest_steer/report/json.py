"""``results.json``: the run fingerprint, aggregates, gates and comparisons (schema in docs/report.md).

In a report directory the case records live one per line in ``cases.jsonl`` beside this
file; a standalone file (``--steer-json PATH``) carries them itself under ``cases``. Each
config keeps its per-prompt values, so a later run can be compared with this one paired
per prompt, and this file can be read back into the same aggregates without recomputing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_steer.report.table import unsteered_counts
from pytest_steer.run.results import RunResults
from pytest_steer.run.selection import RunSelection
from pytest_steer.stats.aggregate import ConfigAggregate
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.comparison import ComparisonResult
from pytest_steer.stats.gate_language import Check, CheckForm
from pytest_steer.stats.gates import GateResult
from pytest_steer.store.atomic import write_text

# 2: configs name their steering method; the run's steering section maps config names to method and parameters.
SCHEMA_VERSION = 2


def results_dict(results: RunResults, *, include_cases: bool = False) -> dict[str, Any]:
    instruction_deltas = results.instruction_deltas()
    unsteered = unsteered_counts(results)
    configs = []
    for agg in results.aggregates:
        entry = agg.to_dict(include_per_prompt=True)
        left = None if unsteered is None else unsteered[agg.name]
        entry["n_unsteered"] = None if left is None else left.n_cases
        entry["n_unsteered_prompts"] = None if left is None else left.n_prompts
        entry["unsteered_reasons"] = None if left is None else left.reasons
        entry["delta_vs_baseline"] = {m: iv.to_dict() for m, iv in results.deltas.get(agg.name, {}).items()}
        entry["instruction_delta_vs_baseline"] = {
            iid: {m: iv.to_dict() | {"estimable": iv.is_defined} for m, iv in metrics.items()}
            for iid, metrics in instruction_deltas.get(agg.name, {}).items()
        }
        configs.append(entry)
    data = {
        "schema_version": SCHEMA_VERSION,
        "run": results.run,
        "n_cases": len(results.records),
        "n_lost": results.n_lost,
        "min_prompts": results.min_prompts,
        "configs": configs,
        "instructions": instruction_table(results.aggregates),
        "gates": [gate.to_dict() for gate in results.gates],
        "comparisons": [comparison.to_dict() for comparison in results.comparisons],
    }
    if results.selection is not None:
        data["selection"] = results.selection.to_dict()
    if results.sequential is not None:
        data["sequential"] = results.sequential
    if results.choice is not None:
        data["choice"] = results.choice
    if include_cases:
        data["cases"] = results.records
    return data


def instruction_table(aggregates: Sequence[ConfigAggregate]) -> list[dict[str, Any]]:
    """Per instruction id, its strict and loose follow rate in every config that has it."""
    ids = sorted({iid for agg in aggregates for iid in agg.per_instruction})
    return [
        {
            "instruction_id": iid,
            "configs": {
                agg.name: {side: iv.to_dict() for side, iv in agg.per_instruction[iid].items()}
                for agg in aggregates
                if iid in agg.per_instruction
            },
        }
        for iid in ids
    ]


def _strict_json(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


def write_results(results: RunResults, path: Path, *, include_cases: bool = False) -> Path:
    """``include_cases`` for a standalone file, which has no ``cases.jsonl`` beside it."""
    document = results_dict(results, include_cases=include_cases)
    text = json.dumps(_strict_json(document), indent=2, ensure_ascii=False, allow_nan=False)
    return write_text(Path(path), text + "\n")


def read_document(path: Path) -> dict[str, Any]:
    """The JSON object of a results.json, with a ``run`` object and a ``configs`` list; ``ValueError`` naming the file if not."""
    path = Path(path)
    hint = "is it a results.json written by pytest-steer?"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, or nesting too deep
        raise ValueError(f"{path} is not valid JSON ({exc}); {hint}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {json_kind(data)}, not an object; {hint}")
    for key, kind, described in (("run", dict, "an object"), ("configs", list, "a list")):
        if key not in data:
            raise ValueError(f"{path} has no {key!r} section; {hint}")
        if not isinstance(data[key], kind):
            raise ValueError(f"{path}: {key!r} is a JSON {json_kind(data[key])}, not {described}; {hint}")
    return data


def json_kind(value: Any) -> str:
    """JSON's name for the type of a parsed value."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_results(path: Path, records: Sequence[dict[str, Any]] | None = None) -> RunResults:
    """The results saved in ``path``; ``records`` (from ``cases.jsonl``) default to the file's own ``cases``."""
    data = read_document(path)
    check_schema_version(data, str(path))
    try:
        return results_from_dict(data, records, source=str(path))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed entry ({type(exc).__name__}: {exc}); is it a results.json written by pytest-steer?") from None


def results_from_dict(data: Mapping[str, Any], records: Sequence[dict[str, Any]] | None = None, *, source: str = "results") -> RunResults:
    check_schema_version(data, source)
    records = list(data.get("cases", [])) if records is None else records
    aggregates = [ConfigAggregate.from_dict(entry) for entry in data["configs"]]
    deltas = {
        entry["name"]: {m: Interval.from_dict(iv) for m, iv in entry.get("delta_vs_baseline", {}).items()}
        for entry in data["configs"]
        if entry.get("delta_vs_baseline")
    }
    return RunResults(
        run=dict(data["run"]),
        records=sorted(records, key=lambda r: (r["config"], r["key"], r["trial"])),
        aggregates=aggregates,
        deltas=deltas,
        gates=[gate_from_dict(g) for g in data.get("gates", [])],
        comparisons=[comparison_from_dict(c) for c in data.get("comparisons", [])],
        n_lost=int(data.get("n_lost", 0)),
        selection=RunSelection.from_dict(data["selection"]) if data.get("selection") else None,
        sequential=data.get("sequential"),
        choice=data.get("choice"),
        **({"min_prompts": int(data["min_prompts"])} if "min_prompts" in data else {}),
    )


def check_schema_version(data: Mapping[str, Any], source: str) -> None:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{source} has schema_version {version!r}, this pytest-steer reads version {SCHEMA_VERSION}; "
            "regenerate it with the matching pytest-steer version"
        )


def _interval(data: Mapping[str, Any] | None) -> Interval | None:
    return None if data is None else Interval.from_dict(dict(data))


def gate_from_dict(data: Mapping[str, Any]) -> GateResult:
    return GateResult(
        check=Check.from_label(data["gate"], CheckForm(data.get("form", CheckForm.GATE.value))),
        config=data["config"],
        passed=bool(data["passed"]),
        observed=_interval(data["observed"]),
        message=data["message"],
        shown=data.get("shown"),
        p_value=data.get("p_value"),
        confidence=data.get("confidence"),
        detectable=data.get("detectable"),
    )


def comparison_from_dict(data: Mapping[str, Any]) -> ComparisonResult:
    return ComparisonResult(
        config=data["config"],
        metric=data["metric"],
        tolerance=float(data["tolerance"]),
        passed=bool(data["passed"]),
        observed=_interval(data["observed"]),
        message=data["message"],
    )

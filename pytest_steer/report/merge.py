"""Merging the saved reports of several runs of one evaluation, e.g. shards on several machines.

Shards must agree on everything a result depends on (model, dataset selection,
generation, steering, quality and any other setting in the run fingerprint); only the
time, the git commit, the package versions and the number of prompts each shard saw may
differ.
A case (prompt key, config, trial) may appear in one shard only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_steer.report.cases import read_cases
from pytest_steer.report.files import CASES_JSONL
from pytest_steer.report.json import SCHEMA_VERSION
from pytest_steer.report.saved import results_path
from pytest_steer.results import RunResults

PER_SHARD_KEYS = ("time", "git_commit", "versions", "shards")  # may differ between shards
PER_SHARD_DATASET_KEYS = ("n_prompts",)


class MergeError(ValueError):
    """The reports cannot be merged into one run; the message says why and what to do."""


@dataclass(frozen=True)
class Shard:
    source: Path
    run: dict[str, Any]
    records: list[dict[str, Any]]
    n_lost: int


def read_shard(location: Path) -> Shard:
    path = results_path(location)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema_version") != SCHEMA_VERSION:
        raise MergeError(f"{path} has schema_version {data.get('schema_version')!r}; this pytest-steer merges version {SCHEMA_VERSION}")
    cases = path.parent / CASES_JSONL
    if cases.is_file():
        records = read_cases(cases)
    elif "cases" in data:  # a standalone results.json (--steer-json)
        records = list(data["cases"])
    else:
        raise MergeError(f"{path.parent} has no {CASES_JSONL}; merging needs the case records of every run")
    return Shard(path, data["run"], records, int(data.get("n_lost", 0)))


def settings_of(run: dict[str, Any]) -> dict[str, Any]:
    """The part of a run fingerprint that shards of one evaluation share."""
    settings = {key: value for key, value in run.items() if key not in PER_SHARD_KEYS}
    if isinstance(settings.get("dataset"), dict):
        settings["dataset"] = {k: v for k, v in settings["dataset"].items() if k not in PER_SHARD_DATASET_KEYS}
    return settings


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            found += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if a == b else [f"{prefix}: {json.dumps(a, default=str)} vs {json.dumps(b, default=str)}"]


def check_compatible(shards: Sequence[Shard]) -> None:
    reference = shards[0]
    for shard in shards[1:]:
        differences = _differences(settings_of(reference.run), settings_of(shard.run))
        if differences:
            listed = "\n  ".join(differences)
            raise MergeError(
                f"{shard.source} was run with other settings than {reference.source}:\n  {listed}\n"
                "only shards of one evaluation (same model, data, generation and steering settings) can be merged"
            )


def merged_records(shards: Sequence[Shard]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str, int], Path] = {}
    records = []
    for shard in shards:
        for record in shard.records:
            case = (str(record["key"]), str(record["config"]), int(record["trial"]))
            if case in seen:
                raise MergeError(
                    f"case key={case[0]} config={case[1]} trial={case[2]} is in both {seen[case]} and {shard.source}; "
                    "shards must split the cases, not repeat them"
                )
            seen[case] = shard.source
            records.append(record)
    return records


def merged_run(shards: Sequence[Shard], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first shard's fingerprint with the merged prompt count and one entry per shard."""
    run = copy.deepcopy(shards[0].run)
    if isinstance(run.get("dataset"), dict):
        run["dataset"]["n_prompts"] = len({str(r["key"]) for r in records})
    commits = {shard.run.get("git_commit") for shard in shards}
    run["git_commit"] = commits.pop() if len(commits) == 1 else None
    times = [shard.run["time"] for shard in shards if shard.run.get("time")]
    run["time"] = max(times) if times else None
    run["shards"] = [
        {
            "source": str(shard.source),
            "time": shard.run.get("time"),
            "git_commit": shard.run.get("git_commit"),
            "versions": shard.run.get("versions"),
            "n_cases": len(shard.records),
        }
        for shard in shards
    ]
    return run


def merge_reports(locations: Sequence[Path]) -> RunResults:
    """One :class:`RunResults` from the saved reports of several shards (gates not evaluated)."""
    if not locations:
        raise MergeError("no report to merge; pass at least one report directory")
    shards = [read_shard(Path(location)) for location in locations]
    check_compatible(shards)
    records = merged_records(shards)
    run = merged_run(shards, records)
    seed = int((run.get("generation") or {}).get("seed", 0))
    return RunResults.from_records(run, records, seed=seed, n_lost=sum(shard.n_lost for shard in shards))

"""Merging the saved reports of several runs of one evaluation, e.g. shards on several machines.

Shards must agree on everything a result depends on (model, dataset selection,
generation, steering, quality and any other setting in the run fingerprint); only the
time, the git commit, the package versions, the shard, the provenance and the number of
prompts each shard saw may differ.
A case (prompt key, config, trial) may appear in one shard only. Runs made with
``--steer-shard K/N`` record their shard: such a set is merged only when it holds each of
shards 1 to N exactly once, so a lost or repeated shard cannot pass for the whole run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_steer.records import CaseRecord
from pytest_steer.report.cases import read_cases
from pytest_steer.report.files import CASES_JSONL
from pytest_steer.report.json import SCHEMA_VERSION, read_document
from pytest_steer.report.saved import results_path
from pytest_steer.results import RunResults
from pytest_steer.sharding import Shard as ShardSpec
from pytest_steer.sharding import parse_shard

PER_SHARD_KEYS = ("time", "git_commit", "versions", "shards", "shard", "provenance")  # may differ between shards
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
    data = read_document(path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise MergeError(f"{path} has schema_version {data.get('schema_version')!r}; this pytest-steer merges version {SCHEMA_VERSION}")
    cases = path.parent / CASES_JSONL
    if cases.is_file():
        records = read_cases(cases)
    elif isinstance(data.get("cases"), list):  # a standalone results.json (--steer-json)
        records = [_case_record(path, number, record) for number, record in enumerate(data["cases"])]
    else:
        raise MergeError(f"{path.parent} has no {CASES_JSONL}; merging needs the case records of every run")
    n_lost = data.get("n_lost", 0)
    if not isinstance(n_lost, int):
        raise MergeError(f"{path}: 'n_lost' is {n_lost!r}, not a count; is it a results.json written by pytest-steer?")
    return Shard(path, data["run"], records, n_lost)


def _case_record(path: Path, number: int, record: Any) -> dict[str, Any]:
    try:
        CaseRecord.from_dict(record)
    except (TypeError, ValueError, AttributeError) as exc:
        raise MergeError(f"{path}: cases[{number}] is not a case record ({exc}); was it written by pytest-steer?") from None
    return record


def shard_of(shard: Shard) -> ShardSpec | None:
    """The ``--steer-shard`` the run was made with; None for a run of every prompt (or one that did not record it)."""
    text = shard.run.get("shard")
    if text is None:
        return None
    try:
        return parse_shard(str(text))
    except ValueError as exc:
        raise MergeError(f"{shard.source}: run.shard {exc}") from None


def check_complete(shards: Sequence[Shard]) -> None:
    """Shards made with ``--steer-shard``: one of each of 1..N, all of the same N, none mixed with whole runs."""
    specs = [(shard.source, shard_of(shard)) for shard in shards]
    sharded = [(source, spec) for source, spec in specs if spec is not None]
    if not sharded:
        return
    whole = [str(source) for source, spec in specs if spec is None]
    if whole:
        raise MergeError(
            f"{', '.join(whole)} ran every prompt (no --steer-shard) but {sharded[0][0]} is shard {sharded[0][1]}; "
            "merge the shards of one sharded run only"
        )
    counts = sorted({spec.count for _, spec in sharded})
    if len(counts) > 1:
        listed = "; ".join(f"{source}: shard {spec}" for source, spec in sharded)
        raise MergeError(f"the reports split the prompts in different ways ({listed}); merge shards 1/N .. N/N of one N")
    by_index: dict[int, list[Path]] = {}
    for source, spec in sharded:
        by_index.setdefault(spec.index, []).append(source)
    repeated = {index: sources for index, sources in by_index.items() if len(sources) > 1}
    if repeated:
        listed = "; ".join(f"shard {i}/{counts[0]} in {', '.join(map(str, sources))}" for i, sources in sorted(repeated.items()))
        raise MergeError(f"a shard is given twice ({listed}); pass each shard's report once")
    missing = [index for index in range(1, counts[0] + 1) if index not in by_index]
    if missing:
        given = ", ".join(f"{source} (shard {spec})" for source, spec in sharded)
        wanted = ", ".join(f"{i}/{counts[0]}" for i in missing)
        raise MergeError(f"shard(s) {wanted} missing: got {given}; merge every shard of the run, or rerun the missing ones")


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
    run["shard"] = None  # the merged report covers every shard
    run.pop("provenance", None)  # each shard's is kept in its entry below
    run["shards"] = [
        {
            "source": str(shard.source),
            "shard": shard.run.get("shard"),
            "time": shard.run.get("time"),
            "git_commit": shard.run.get("git_commit"),
            "versions": shard.run.get("versions"),
            "provenance": shard.run.get("provenance"),
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
    check_complete(shards)
    check_compatible(shards)
    records = merged_records(shards)
    run = merged_run(shards, records)
    seed = int((run.get("generation") or {}).get("seed", 0))
    return RunResults.from_records(run, records, seed=seed, n_lost=sum(shard.n_lost for shard in shards))

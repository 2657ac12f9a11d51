"""Merging the saved reports of several runs of one evaluation, e.g. shards on several machines.

Shards must agree on everything a result depends on (model, dataset selection,
generation, steering, quality and any other setting in the run fingerprint); only the
time, the git commit, the package versions, the shard, the provenance and the number of
prompts each shard saw may differ.
A case (prompt key, config, trial) may appear in one shard only. Runs made with
``--steer-shard K/N`` record their shard: such a set is merged only when it holds each of
shards 1 to N exactly once, so a lost or repeated shard cannot pass for the whole run.

The merge keeps what the runs knew about their own completeness. A run that pytest's
selection (or an early end) left partial stays partial: the merged report keeps its
``selection``, and a check that reads a partly run config is not decided. A run whose
``--steer-sequential`` looks stopped generation early is refused: its cases are neither a
fixed sample nor those a sequential run over every prompt would look at (docs/report.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_steer.plan.cases import SteeringConfig
from pytest_steer.plan.sharding import Shard as ShardSpec
from pytest_steer.plan.sharding import parse_shard
from pytest_steer.report.cases import embedded_cases, read_cases
from pytest_steer.report.files import CASES_JSONL
from pytest_steer.report.json import SCHEMA_VERSION, read_document
from pytest_steer.report.saved import results_path
from pytest_steer.run.results import RunResults
from pytest_steer.run.selection import ConfigSelection, RunSelection
from pytest_steer.stats.gate_language import Check
from pytest_steer.stats.gates import GateResult

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
    selection: RunSelection | None = None  # what the run's selection (or early end) left of its collected cases
    sequential: dict[str, Any] | None = None  # where the run's sequential looks stopped


HINT = "is it a results.json written by pytest-steer?"


def read_shard(location: Path) -> Shard:
    path = results_path(location)
    data = read_document(path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise MergeError(f"{path} has schema_version {data.get('schema_version')!r}; this pytest-steer merges version {SCHEMA_VERSION}")
    cases = path.parent / CASES_JSONL
    if cases.is_file():
        records = read_cases(cases)
    elif isinstance(data.get("cases"), list):  # a standalone results.json (--steer-json)
        records = embedded_cases(path, data["cases"])
    else:
        raise MergeError(f"{path.parent} has no {CASES_JSONL}; merging needs the case records of every run")
    if data.get("choice") is not None:
        raise MergeError(
            f"{path} chose {data['choice'].get('method')}'s {data['choice'].get('parameter')} on its own selection prompts (auto); "
            "runs that each chose cannot be merged into one evaluation: run the choice once, unsharded, or give the chosen "
            "value to every shard"
        )
    n_lost = data.get("n_lost", 0)
    if not isinstance(n_lost, int):
        raise MergeError(f"{path}: 'n_lost' is {n_lost!r}, not a count; {HINT}")
    return Shard(path, data["run"], records, n_lost, _selection(path, data.get("selection")), _sequential(path, data.get("sequential")))


def _selection(path: Path, data: Any) -> RunSelection | None:
    if data is None:
        return None
    counts = ("cases_selected", "cases_collected", "prompts_selected", "prompts_collected")
    configs = data.get("configs") if isinstance(data, dict) else None
    if not isinstance(configs, dict):
        raise MergeError(
            f"{path}: 'selection' is {json.dumps(data)[:60]}; expected an object with 'configs' (config -> its counts); {HINT}"
        )
    for name, entry in configs.items():
        if not isinstance(entry, dict) or any(not _is_count(entry.get(key)) for key in counts):
            raise MergeError(
                f"{path}: selection.configs.{name} is {json.dumps(entry)[:80]}; expected the counts {', '.join(counts)}; {HINT}"
            )
    stopped = data.get("stopped")
    if stopped is not None and not isinstance(stopped, str):
        raise MergeError(f"{path}: selection.stopped is {json.dumps(stopped)}; expected why the run ended early, or null; {HINT}")
    return RunSelection(tuple(ConfigSelection(name, **{key: entry[key] for key in counts}) for name, entry in configs.items()), (), stopped)


def _sequential(path: Path, data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise MergeError(f"{path}: 'sequential' is {json.dumps(data)[:60]}; expected an object; {HINT}")
    for key in ("prompts_used", "prompts_total"):
        if not _is_count(data.get(key)):
            raise MergeError(f"{path}: sequential.{key} is {json.dumps(data.get(key))}; expected a count of prompts; {HINT}")
    by_config = data.get("prompts_by_config") or {}
    if not isinstance(by_config, dict) or not all(_is_count(n) for n in by_config.values()):
        raise MergeError(
            f"{path}: sequential.prompts_by_config is {json.dumps(by_config)[:80]}; expected config -> a count of prompts; {HINT}"
        )
    return data


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def stopped_early(shard: Shard) -> str | None:
    """Where the run's sequential looks stopped generating before its last prompt, or None.

    A run that pytest's selection left partial took no look (every selected case ran).
    """
    sequential, selection = shard.sequential, shard.selection
    if sequential is None or (selection is not None and selection.partial and selection.stopped is None):
        return None
    used, total = sequential["prompts_used"], sequential["prompts_total"]
    configs = {config: n for config, n in (sequential.get("prompts_by_config") or {}).items() if n < min(used, total)}
    if used >= total and not configs:
        return None
    looks = sequential.get("looks") or []
    where = f"generated {used} of its {total} prompts" + (
        f" (look {len(looks)}, blocks of {sequential.get('block_size')})" if looks else ""
    )
    return where + "".join(f", {config} {n} of them" for config, n in configs.items())


def check_not_stopped_early(shards: Sequence[Shard]) -> None:
    """Refuse runs whose sequential looks stopped generation early: no fixed-design or sequential decision over their union is valid."""
    stops = [(shard.source, where) for shard in shards if (where := stopped_early(shard)) is not None]
    if not stops:
        return
    listed = "\n  ".join(f"{source}: its --steer-sequential looks stopped generation early: it {where}" for source, where in stops)
    raise MergeError(
        f"cannot merge runs that stopped early:\n  {listed}\n"
        "their cases are neither a fixed sample (where each run stopped depended on its responses, so fixed-design intervals "
        "over them are biased) nor the prompts a sequential run over every prompt would look at (it takes them in its own "
        "order, and needs prompts these runs never generated), so merge decides them neither way, with or without --sequential; "
        "each run's own report holds its sequential verdicts. To decide over every prompt, run the evaluation sequentially in "
        "one run (-n N spreads it over N workers), or rerun the shards without --steer-sequential (the response cache keeps "
        "the cases already generated) and merge those, with --sequential to replay where a sequential run would stop"
    )


def merged_selection(shards: Sequence[Shard], records: Sequence[dict[str, Any]]) -> RunSelection | None:
    """What the runs' selections left of their collected cases, together; None when no run recorded its selection.

    Shards collect disjoint cases, so their counts add up. Runs of every prompt collect the
    same cases and select disjoint ones: their selected cases add up over one collection.
    A run that did not record its selection counts as having selected every case it has.
    """
    if all(shard.selection is None for shard in shards):
        return None
    sharded = any(shard.run.get("shard") for shard in shards)  # check_complete: then every run is a shard
    totals: dict[str, list[int]] = {}  # config -> [cases selected, cases collected, prompts selected, prompts collected]
    for shard in shards:
        for config in shard.selection.configs if shard.selection is not None else _everything_selected(shard.records):
            counts = [config.cases_selected, config.cases_collected, config.prompts_selected, config.prompts_collected]
            if config.name not in totals:
                totals[config.name] = counts
                continue
            total = totals[config.name]
            total[0] += counts[0]
            total[2] += counts[2]
            if sharded:
                total[1] += counts[1]
                total[3] += counts[3]
            else:
                total[1], total[3] = max(total[1], counts[1]), max(total[3], counts[3])
    configs = []
    for name, (cases_selected, cases_collected, prompts_selected, prompts_collected) in totals.items():
        cases_selected = min(cases_selected, cases_collected)
        if not sharded and len(shards) > 1:  # the runs may have selected the same prompts (other trials): count them once
            prompts_selected = len({str(r["key"]) for r in records if r["config"] == name})
        if cases_selected == cases_collected:
            prompts_selected = prompts_collected
        configs.append(ConfigSelection(name, cases_selected, cases_collected, min(prompts_selected, prompts_collected), prompts_collected))
    stopped = "; ".join(dict.fromkeys(shard.selection.stopped for shard in shards if shard.selection and shard.selection.stopped))
    return RunSelection(tuple(configs), (), stopped or None)


def _everything_selected(records: Sequence[dict[str, Any]]) -> list[ConfigSelection]:
    by_config: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_config.setdefault(str(record["config"]), []).append(record)
    return [
        ConfigSelection(name, len(cases), len(cases), len({r["key"] for r in cases}), len({r["key"] for r in cases}))
        for name, cases in by_config.items()
    ]


def decide_selected(
    results: RunResults, gates: Sequence[GateResult], checks: Sequence[Check]
) -> tuple[list[GateResult], RunSelection | None]:
    """The gates the merged selection decides, and the selection naming those it leaves undecided (as the runs did)."""
    if results.selection is None:
        return list(gates), None
    steering = {name: entry for name, entry in (results.run.get("steering") or {}).items() if isinstance(entry, dict)}
    configs = [SteeringConfig(name, entry.get("method"), tuple((entry.get("params") or {}).items())) for name, entry in steering.items()]
    kept, _, selection = results.selection.decide(gates, [], configs=configs, checks=checks)
    return kept, selection


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
    check_not_stopped_early(shards)
    records = merged_records(shards)
    run = merged_run(shards, records)
    seed = int((run.get("generation") or {}).get("seed", 0))
    selection = merged_selection(shards, records)
    return RunResults.from_records(run, records, seed=seed, n_lost=sum(shard.n_lost for shard in shards), selection=selection)

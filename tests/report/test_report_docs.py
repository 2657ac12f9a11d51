"""docs/report.md documents every key results.json and cases.jsonl hold, and nothing they do not."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import GATES, make_method_results, make_records

from pytest_steer.plan.cases import steering_configs
from pytest_steer.plan.options import SteerSettings
from pytest_steer.plan.sharding import Shard
from pytest_steer.plan.spec import PACKAGES, RunSpec, run_provenance
from pytest_steer.report.cases import write_cases
from pytest_steer.report.json import write_results
from pytest_steer.report.merge import merge_reports
from pytest_steer.run.records import CaseRecord
from pytest_steer.run.results import RunResults
from pytest_steer.stats.bootstrap import Interval
from pytest_steer.stats.comparison import ComparisonResult
from pytest_steer.stats.gates import evaluate_gates

DOCS = Path(__file__).resolve().parents[2] / "docs" / "report.md"
HEADING = re.compile(r"^\*\*(?P<name>[^*]+)\*\*")
KEY = re.compile(r"`([A-Za-z_]+)`")


def documented() -> dict[str, dict[str, str]]:
    """Bold heading (``run``, ``gates[]``, ``case record``, ...) -> key -> the text of its row."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = None
        elif match := HEADING.match(line):
            current = match["name"].strip("`")
            tables[current] = {}
        elif current is not None and line.startswith("| ") and not line.startswith(("| key ", "|---")):
            first, _, rest = line[2:].partition(" | ")
            for key in KEY.findall(first):
                tables[current][key] = rest
    return tables


def real_results(tmp_path: Path) -> dict[str, Any]:
    """A results.json as a run writes it: the fingerprint from the run spec, records as the plugin sends them."""
    settings = SteerSettings(shard=Shard(1, 2))
    spec = RunSpec.from_settings(settings, tuple(steering_configs([5.0, 10.0, 30.0])))
    model = {"name": "tiny", "revision": "sha256:abc", "dtype": "float32", "attn_implementation": "eager"}
    provenance = run_provenance(["suites/ifeval", "-n", "2"], tmp_path, time.time() - 3.0, ["cpu"])
    run = spec.fingerprint(model, 12, tmp_path, provenance)
    names = {None: "baseline", 5.0: "pasta_alpha5", 10.0: "pasta_alpha10", 30.0: "pasta_alpha30"}
    records = []
    for record in make_records():
        record = record | {"config": names[record["alpha"]], "method": None if record["alpha"] is None else "pasta"}
        full = CaseRecord.from_dict(record).to_dict()
        records.append(full | {"worker": "gw0", "nodeid": f"suites/ifeval/test_ifeval.py::test_x[{record['key']}]"})
    results = RunResults.from_records(run, records, seed=0)
    observed = Interval(-0.01, -0.05, 0.03, 12)
    comparison = ComparisonResult("pasta_alpha10", "strict_prompt_accuracy", 0.05, True, observed, "pasta_alpha10: ...")
    gates = evaluate_gates([g.replace("alpha=10", "pasta_alpha10") for g in GATES], results.aggregates, max_errors=1, min_prompts=1)
    results = dataclasses.replace(results, gates=gates, comparisons=[comparison])
    return json.loads(write_results(results, tmp_path / "results.json", include_cases=True).read_text())


def _keys(objects: list[dict[str, Any]]) -> set[str]:
    return {key for entry in objects for key in entry}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return real_results(tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize(
    ("heading", "objects"),
    [
        ("top level", lambda d: [d]),
        ("run", lambda d: [d["run"]]),
        ("run.dataset", lambda d: [d["run"]["dataset"]]),
        ("run.provenance", lambda d: [d["run"]["provenance"]]),
        ("configs[]", lambda d: d["configs"]),
        ("instructions[]", lambda d: d["instructions"]),
        ("gates[]", lambda d: d["gates"]),
        ("comparisons[]", lambda d: d["comparisons"]),
        ("case record", lambda d: d["cases"]),
    ],
)
def test_every_key_is_documented_and_every_documented_key_is_written(data: dict[str, Any], heading: str, objects: Any) -> None:
    written = _keys(objects(data))
    docs = set(documented()[heading])
    # "shards" belongs to merged reports only (checked below); "selection" to a run's own report;
    # "sequential" to a sequential replay; "choice" to a run with auto
    optional = {"run": {"shards"}, "top level": {"selection", "sequential", "choice"}}.get(heading, set())
    assert written == docs - optional, (
        f"{heading}: written but not documented {sorted(written - docs)}; documented but not written {sorted(docs - written)}"
    )


def test_nested_values_are_documented(data: dict[str, Any]) -> None:
    tables = documented()
    assert set(KEY.findall(tables["run"]["model"])) == set(data["run"]["model"])
    assert set(KEY.findall(tables["run"]["generation"])) == set(data["run"]["generation"])
    assert all(name in tables["run"]["versions"] for name in PACKAGES)
    assert set(data["run"]["versions"]) == set(PACKAGES)
    assert set(KEY.findall(tables["case record"]["model"] + tables["run"]["model"])) >= set(data["cases"][0]["model"])
    delta_keys = _keys([entry for config in data["configs"] for entry in config["instruction_delta_vs_baseline"].values()])
    assert delta_keys == set(re.findall(r'"(\w+)": interval', tables["configs[]"]["instruction_delta_vs_baseline"]))
    interval = set(data["configs"][0]["metrics"]["strict_prompt_accuracy"])
    assert interval == set(re.search(r"\*interval\* is `\{([^}]*)\}`", DOCS.read_text()).group(1).replace(" ", "").split(","))


def test_merged_shards_entries_are_documented(tmp_path: Path) -> None:
    results = make_method_results()
    locations = []
    for index in (1, 2):
        records = [r for r in results.records if int(r["key"][1:]) % 2 == index - 1]
        run = results.run | {"shard": f"{index}/2"}
        write_results(RunResults.from_records(run, records, seed=0), tmp_path / f"s{index}" / "results.json")
        locations.append(write_cases(records, tmp_path / f"s{index}" / "cases.jsonl").parent)
    merged = merge_reports(locations)
    assert _keys(merged.run["shards"]) == set(KEY.findall(documented()["run"]["shards"]))


def test_the_outputs_table_lists_every_file_of_the_report_directory(tmp_path: Path) -> None:
    from pytest_steer.report.files import write_report

    written = {path.name for path in write_report(dataclasses.replace(make_method_results(), min_prompts=1), tmp_path)}
    row = next(line for line in DOCS.read_text(encoding="utf-8").splitlines() if "| the report directory |" in line)
    assert set(re.findall(r"`([\w.]+)`", row.split(" | ")[0])) == written


def test_the_suite_properties_of_an_unsharded_run_are_those_documented_unconditionally() -> None:
    from pytest_steer.report.junit import suite_properties

    text = " ".join(DOCS.read_text(encoding="utf-8").split())
    carried = re.search(r"The `<testsuite>` carries the run's (.*?), also under pytest-xdist", text).group(1)
    documented = set(re.findall(r"`(steer\.[\w.<>]+)`", carried))
    run = {
        "model": {"name": "m", "revision": "r", "dtype": "float32"},
        "dataset": {"source": "builtin", "n_prompts": 3},
        "git_commit": "0123abc",
        "provenance": {"devices": ["cpu"], "python": "3.11.7"},
        "versions": {"torch": "2.5.0"},
        "shard": None,
    }
    names = {name.replace("steer.version.torch", "steer.version.<package>") for name, _ in suite_properties(run)}
    assert names == documented
    assert "steer.shard" in dict(suite_properties(run | {"shard": "1/2"}))
    assert "sharded run (`--steer-shard K/N`) adds `steer.shard`" in text

"""results.json, cases.jsonl and summary.csv: content, round trips, agreement with each other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_records, make_results, make_run

from pytest_steer.report.cases import read_cases, write_cases
from pytest_steer.report.json import SCHEMA_VERSION, read_results, results_dict, write_results
from pytest_steer.report.summary_csv import write_summary_csv
from pytest_steer.run.results import RunResults
from pytest_steer.stats.metrics import METRICS


def test_results_json_schema_and_numbers(results: RunResults, tmp_path: Path) -> None:
    data = json.loads(write_results(results, tmp_path / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["run"]["model"]["name"] == "tiny-test-model"
    assert set(data["run"]) >= {"model", "dataset", "generation", "steering", "versions", "git_commit", "time"}
    assert data["n_cases"] == len(results.records) and data["n_lost"] == 0
    assert [(c["name"], c["alpha"]) for c in data["configs"]] == [("baseline", None), ("alpha5", 5.0), ("alpha10", 10.0), ("alpha30", 30.0)]
    for config, agg in zip(data["configs"], results.aggregates):
        assert set(config["metrics"]) == set(METRICS)
        for metric, value in config["metrics"].items():
            interval = agg.metrics[metric]
            assert value == {"mean": interval.mean, "ci_low": interval.ci_low, "ci_high": interval.ci_high, "n_prompts": interval.n_prompts}
        assert config["n_errors"] == agg.n_errors
    assert data["configs"][0]["delta_vs_baseline"] == {}
    assert data["configs"][2]["delta_vs_baseline"]["quality"]["mean"] == results.deltas["alpha10"]["quality"].mean
    assert "cases" not in data  # they live in cases.jsonl


def test_instruction_section_pivots_per_config_follow_rates(results: RunResults) -> None:
    data = results_dict(results)
    ids = [entry["instruction_id"] for entry in data["instructions"]]
    assert ids == sorted({iid for r in results.records for iid in r["instruction_id_list"]})
    for entry in data["instructions"]:
        for agg in results.aggregates:
            saved = entry["configs"][agg.name]
            assert saved["strict"]["mean"] == agg.per_instruction[entry["instruction_id"]]["strict"].mean
            assert saved["loose"]["n_prompts"] == agg.per_instruction[entry["instruction_id"]]["loose"].n_prompts


def test_gates_are_saved_with_their_verdicts(results: RunResults) -> None:
    gates = results_dict(results)["gates"]
    assert [g["passed"] for g in gates] == [True, True, True, True, False]
    assert gates[-1]["config"] == "alpha10" and gates[-1]["threshold"] == 0.5


def test_results_json_reads_back_to_the_same_document(results: RunResults, tmp_path: Path) -> None:
    path = write_results(results, tmp_path / "results.json")
    again = read_results(path, results.records)
    assert results_dict(again) == results_dict(results)
    assert [g.message for g in again.gates] == [g.message for g in results.gates]


def test_undefined_values_are_written_as_null(tmp_path: Path) -> None:
    records = [dict(r, quality=None) for r in make_records(n_prompts=3, trials=1)]
    results = RunResults.from_records(make_run(n_prompts=3, trials=1), records, seed=0)
    data = json.loads(write_results(results, tmp_path / "results.json").read_text())
    assert "quality" not in data["configs"][0]["metrics"]  # no prompt had a quality score
    assert read_results(tmp_path / "results.json", records).aggregates[0].metrics.keys() == results.aggregates[0].metrics.keys()


def test_schema_version_mismatch_is_refused(results: RunResults, tmp_path: Path) -> None:
    data = results_dict(results) | {"schema_version": 99}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data, allow_nan=True))
    with pytest.raises(ValueError, match="schema_version 99"):
        read_results(path, [])


def test_cases_jsonl_has_one_record_per_line(results: RunResults, tmp_path: Path) -> None:
    path = write_cases(results.records, tmp_path / "cases.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(results.records)
    first = json.loads(lines[0])
    assert set(first) >= {"key", "config", "trial", "seed", "response", "instruction_id_list", "strict", "loose", "quality"}
    assert read_cases(path) == results.records


def test_malformed_case_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(make_records(n_prompts=1, trials=1)[0]) + "\n" + '{"key": "x"}\n')
    with pytest.raises(ValueError, match=r"cases.jsonl:2: not a case record"):
        read_cases(path)


def test_summary_csv_equals_results_json(results: RunResults, tmp_path: Path) -> None:
    # pandas 2's default float parser can miss a value's last bit; pandas 3 parses exactly and deprecates the option
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    frame = pd.read_csv(write_summary_csv(results, tmp_path / "summary.csv"), **exact)
    data = results_dict(results)
    assert list(frame["config"]) == [c["name"] for c in data["configs"]]
    assert math.isnan(frame["alpha"][0]) and list(frame["alpha"][1:]) == [5.0, 10.0, 30.0]
    assert list(frame["n_errors"]) == [0, 0, 0, 1]
    for row, config in zip(frame.to_dict("records"), data["configs"]):
        for metric, value in config["metrics"].items():
            assert row[metric] == value["mean"]
            assert row[f"{metric}_ci_low"] == value["ci_low"]
            assert row[f"{metric}_ci_high"] == value["ci_high"]
            assert row[f"{metric}_n_prompts"] == value["n_prompts"]
            delta = config["delta_vs_baseline"].get(metric)
            if delta is None:
                assert math.isnan(row[f"delta_{metric}"])
            else:
                assert row[f"delta_{metric}"] == delta["mean"] and row[f"delta_{metric}_ci_high"] == delta["ci_high"]
    assert list(frame["gates_failed"]) == [0, 0, 1, 0]


def test_standalone_results_json_embeds_the_cases(results: RunResults, tmp_path: Path) -> None:
    data = json.loads(write_results(results, tmp_path / "r.json", include_cases=True).read_text())
    assert data["cases"] == results.records
    assert read_results(tmp_path / "r.json").records == results.records


def test_an_output_that_cannot_be_written_costs_only_itself(tmp_path: Path) -> None:
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.report.outputs import write_outputs

    blocked = tmp_path / "taken"
    blocked.mkdir()  # a directory where the JSON file should go
    settings = SteerSettings(json=blocked, summary_md=tmp_path / "summary.md", save=tmp_path / "baseline.json")
    written = write_outputs(make_results(), settings, tmp_path / "report")
    assert len(written.failures) == 1 and written.failures[0].startswith(f"--steer-json {blocked}: not written (")
    assert {path.name for path in written.paths} >= {"report.html", "results.json", "summary.md", "baseline.json"}
    assert all(path.is_file() for path in written.paths)

"""python -m pytest_steer report / merge: regenerate and merge saved reports without a model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from report_fixtures import make_records, make_results, make_run

from pytest_steer.__main__ import main
from pytest_steer.report.cases import write_cases
from pytest_steer.report.files import write_report
from pytest_steer.report.json import results_dict, write_results
from pytest_steer.run.results import RunResults
from pytest_steer.run.selection import ConfigSelection, RunSelection
from pytest_steer.stats.gates import evaluate_gates

OUTPUTS = (
    "report.html",
    "results.json",
    "cases.jsonl",
    "summary.csv",
    "trade_off.png",
    "instruction_heatmap.png",
    "instruction_deltas.png",
)


def _numbers(path: Path) -> dict:
    """What the report says, without the per-run and per-shard bookkeeping."""
    data = json.loads((path / "results.json").read_text())
    return {key: data[key] for key in ("configs", "instructions", "gates", "comparisons", "n_lost", "n_cases")}


def _save(results: RunResults, directory: Path) -> Path:
    """The files ``report`` and ``merge`` read back (the figures and HTML are not needed)."""
    write_results(results, directory / "results.json")
    write_cases(results.records, directory / "cases.jsonl")
    return directory


def test_report_regenerates_identical_outputs(results: RunResults, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    write_report(results, saved)
    assert main(["report", str(saved), "--out", str(tmp_path / "again"), "--summary-md", str(tmp_path / "s.md")]) == 0
    for name in ("results.json", "cases.jsonl", "summary.csv", "report.html"):
        assert (tmp_path / "again" / name).read_bytes() == (saved / name).read_bytes(), name
    assert (tmp_path / "s.md").read_text().startswith("### Steering trade-off")


def test_report_accepts_a_results_json_without_cases(results: RunResults, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_results(results, tmp_path / "only" / "r.json")
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "no cases.jsonl" in capsys.readouterr().err
    full = _numbers(_save(results, tmp_path / "full"))
    absent = {"n_unsteered": None, "n_unsteered_prompts": None, "unsteered_reasons": None}  # counted from the cases, which are absent
    counted = [{**config, **absent} for config in full["configs"]]
    assert _numbers(tmp_path / "out") == {**full, "n_cases": 0, "configs": counted}
    assert (tmp_path / "out" / "cases.jsonl").read_text() == ""


def test_report_of_a_missing_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no results.json" in capsys.readouterr().err


def _shards(tmp_path: Path, records: list[dict], **run_changes: dict) -> list[Path]:
    """Two shards split by prompt key, as if run on two machines."""
    halves = [[r for r in records if int(r["key"][1:]) % 2 == side] for side in (0, 1)]
    paths = []
    for index, half in enumerate(halves):
        run = make_run(n_prompts=6, time=f"2026-01-0{index + 1}T00:00:00+00:00") | {
            "git_commit": f"commit{index}",
            "shard": f"{index + 1}/2",
        }
        if index == 1:
            for section, values in run_changes.items():
                run[section] = run[section] | values
        paths.append(_save(RunResults.from_records(run, half, seed=0), tmp_path / f"shard{index}"))
    return paths


def test_merge_equals_the_unsharded_run(tmp_path: Path) -> None:
    records = make_records()
    shards = _shards(tmp_path, records)
    gate = "alpha=10: strict_prompt_accuracy - baseline >= 0.5"
    code = main(["merge", str(tmp_path / "merged"), *map(str, shards), "--gate", gate, "--max-errors", "1", "--min-prompts", "1"])
    assert code == 1  # the gate fails, as on the whole run
    whole = make_results(records)
    whole = dataclasses.replace(whole, gates=evaluate_gates([gate], whole.aggregates, max_errors=1, min_prompts=1))
    merged = _numbers(tmp_path / "merged")
    assert merged == {key: results_dict(whole)[key] for key in merged}
    data = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert data["run"]["dataset"]["n_prompts"] == 12
    assert data["run"]["git_commit"] is None  # the shards ran different commits
    assert data["run"]["time"] == "2026-01-02T00:00:00+00:00"
    assert [s["n_cases"] for s in data["run"]["shards"]] == [48, 48]
    assert [s["shard"] for s in data["run"]["shards"]] == ["1/2", "2/2"] and data["run"]["shard"] is None
    assert all((tmp_path / "merged" / name).is_file() for name in OUTPUTS)


def test_merge_fail_if_and_correction_match_a_run(tmp_path: Path) -> None:
    records = make_records()
    shards = _shards(tmp_path, records)
    fail_if = "strict_prompt_accuracy - baseline < 0"
    for correction in ("holm", "none"):
        out = tmp_path / correction
        args = ["merge", str(out), *map(str, shards), "--fail-if", fail_if, "--gate-correction", correction, "--max-errors", "1"]
        code = main(args)
        whole = make_results(records)
        expected = evaluate_gates([], whole.aggregates, fail_ifs=[fail_if], correction=correction, max_errors=1, min_prompts=10)
        data = json.loads((out / "results.json").read_text())
        assert data["gates"] == [g.to_dict() for g in expected]
        assert code == (1 if any(not g.passed for g in expected) else 0)
        assert all(g["form"] == "fail_if" and g["gate"] == f"fail if {fail_if}" for g in data["gates"])


def test_merge_exits_0_when_gates_pass(tmp_path: Path) -> None:
    shards = _shards(tmp_path, make_records())
    assert main(["merge", str(tmp_path / "m"), *map(str, shards), "--gate", "strict_prompt_accuracy >= 0.05", "--max-errors", "1"]) == 0


def test_merge_counts_errors_against_the_budget(tmp_path: Path) -> None:
    shards = _shards(tmp_path, make_records())
    assert main(["merge", str(tmp_path / "m"), *map(str, shards), "--gate", "alpha30: strict_prompt_accuracy >= 0"]) == 1
    gates = json.loads((tmp_path / "m" / "results.json").read_text())["gates"]
    assert "over the budget" in gates[0]["message"]


def test_merge_refuses_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = _shards(tmp_path, make_records(), generation={"temperature": 1.0})
    assert main(["merge", str(tmp_path / "m"), *map(str, shards)]) == 2
    err = capsys.readouterr().err
    assert "generation.temperature: 0.7 vs 1.0" in err and "other settings" in err
    assert not (tmp_path / "m").exists()


def test_merge_refuses_another_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = _shards(tmp_path, make_records(), model={"dtype": "bfloat16"})
    assert main(["merge", str(tmp_path / "m"), *map(str, shards)]) == 2
    assert 'model.dtype: "float32" vs "bfloat16"' in capsys.readouterr().err


def test_merge_refuses_a_case_in_two_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = _save(RunResults.from_records(make_run(), make_records(n_prompts=2, trials=1), seed=0), tmp_path / "a")
    copy = _save(RunResults.from_records(make_run(), make_records(n_prompts=2, trials=1), seed=0), tmp_path / "b")
    assert main(["merge", str(tmp_path / "m"), str(shard), str(copy)]) == 2
    assert "case key=p000 config=alpha10 trial=0 is in both" in capsys.readouterr().err


def test_merge_rejects_a_bad_gate_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "none"), "--gate", "strict_prompt_accuracy >="]) == 2
    assert "invalid gate" in capsys.readouterr().err


def test_module_entry_point_runs(results: RunResults, tmp_path: Path) -> None:
    saved = _save(results, tmp_path / "saved")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_steer", "report", str(saved), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "alpha10" in done.stdout and f"wrote {tmp_path / 'out' / 'report.html'}" in done.stdout


def test_standalone_results_json_carries_its_cases(tmp_path: Path) -> None:
    """--steer-json files embed the cases, so they can be reported on and merged alone."""
    records = make_records()
    shards = _shards(tmp_path, records)
    standalone = []
    for index, shard in enumerate(shards):
        data = json.loads((shard / "results.json").read_text())
        data["cases"] = [json.loads(line) for line in (shard / "cases.jsonl").read_text().splitlines()]
        path = tmp_path / f"standalone{index}.json"
        path.write_text(json.dumps(data))
        standalone.append(path)
    assert main(["merge", str(tmp_path / "merged"), *map(str, standalone), "--max-errors", "1"]) == 0
    merged = _numbers(tmp_path / "merged")
    assert merged["configs"] == results_dict(RunResults.from_records(make_run(), records, seed=0))["configs"]
    assert main(["report", str(standalone[0]), "--out", str(tmp_path / "one")]) == 0
    assert len((tmp_path / "one" / "cases.jsonl").read_text().splitlines()) == 48


def _with_shard(location: Path, shard: str | None, copy_to: Path | None = None) -> Path:
    """The saved report at ``location`` (or a copy of it) recorded as shard ``shard``."""
    if copy_to is not None:
        copy_to.mkdir()
        for name in ("results.json", "cases.jsonl"):
            (copy_to / name).write_bytes((location / name).read_bytes())
        location = copy_to
    data = json.loads((location / "results.json").read_text())
    data["run"]["shard"] = shard
    (location / "results.json").write_text(json.dumps(data))
    return location


def test_merge_refuses_an_incomplete_set_of_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = _shards(tmp_path, make_records())
    assert main(["merge", str(tmp_path / "m"), str(first)]) == 2
    err = capsys.readouterr().err
    assert "shard(s) 2/2 missing" in err and f"{first / 'results.json'} (shard 1/2)" in err
    assert not (tmp_path / "m").exists()


def test_merge_refuses_shards_of_different_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _shards(tmp_path, make_records())
    _with_shard(second, "2/3")
    assert main(["merge", str(tmp_path / "m"), str(first), str(second)]) == 2
    err = capsys.readouterr().err
    assert "split the prompts in different ways" in err and "shard 1/2" in err and "shard 2/3" in err


def test_merge_refuses_a_shard_given_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _shards(tmp_path, make_records())
    again = _with_shard(first, "1/2", copy_to=tmp_path / "again")
    assert main(["merge", str(tmp_path / "m"), str(first), str(second), str(again)]) == 2
    err = capsys.readouterr().err
    assert "given twice" in err and str(first / "results.json") in err and str(again / "results.json") in err


def test_merge_refuses_a_whole_run_beside_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _shards(tmp_path, make_records())
    _with_shard(second, None)
    assert main(["merge", str(tmp_path / "m"), str(first), str(second)]) == 2
    assert "ran every prompt (no --steer-shard)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[1, 2]", "holds a JSON array, not an object"),
        (b'{"schema_version": 2, "configs": []}', "has no 'run' section"),
        (b'{"schema_version": 2, "run": [], "configs": []}', "'run' is a JSON array, not an object"),
        (b"\xff\xfe not text", "is not valid JSON"),
        (b'{"schema_version": 2, "run": {}, "configs": [{"name": 1}]}', "malformed entry"),
    ],
)
@pytest.mark.parametrize("command", ["merge", "report"])
def test_a_malformed_results_json_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str, command: str
) -> None:
    first, second = _shards(tmp_path, make_records())
    (second / "results.json").write_bytes(content)
    args = ["merge", str(tmp_path / "m"), str(first), str(second)] if command == "merge" else ["report", str(second)]
    if command == "merge" and problem == "malformed entry":
        problem = "has schema_version"  # merge reads only the run section; this one is valid
        (second / "results.json").write_bytes(content.replace(b'"schema_version": 2', b'"schema_version": 1'))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {second / 'results.json'}") and problem in err


# ---------------------------------------------------------------------------- what the runs knew


def _selected(records: list[dict], kept: list[dict], n_prompts: int = 12, trials: int = 2) -> RunSelection:
    """What pytest's selection kept (``kept``) of every config's collected cases (those of ``records``)."""
    configs = []
    for name in dict.fromkeys(r["config"] for r in records):
        mine = [r for r in kept if r["config"] == name]
        configs.append(ConfigSelection(name, len(mine), n_prompts * trials, len({r["key"] for r in mine}), n_prompts))
    return RunSelection(tuple(configs))


def _partial(directory: Path, records: list[dict], kept: list[dict], run: dict | None = None) -> Path:
    selection = _selected(records, kept, n_prompts=len({r["key"] for r in records}))
    return _save(RunResults.from_records(run or make_run(), kept, seed=0, selection=selection), directory)


@pytest.mark.parametrize("sequential", [[], ["--sequential", "--sequential-block", "2"]], ids=["fixed", "sequential"])
def test_merge_of_a_k_run_leaves_its_checks_undecided(tmp_path: Path, capsys: pytest.CaptureFixture[str], sequential: list[str]) -> None:
    records = make_records()
    run = _partial(tmp_path / "k", records, [r for r in records if r["key"] == "p001"])  # as `-k p001` keeps them
    fail_if = "alpha=10: strict_prompt_accuracy - baseline < -0.9"
    code = main(["merge", str(tmp_path / "m"), str(run), "--fail-if", fail_if, "--min-prompts", "1", *sequential])
    out = capsys.readouterr().out
    assert code == 0  # as the run: a check not decided is no failure
    data = json.loads((tmp_path / "m" / "results.json").read_text())
    assert data["gates"] == []
    assert data["selection"]["partial"] is True and data["selection"]["cases_selected"] == 8
    assert data["selection"]["configs"]["alpha10"] == {
        "cases_selected": 2,
        "cases_collected": 24,
        "prompts_selected": 1,
        "prompts_collected": 12,
    }
    reason = (
        "not decided: pytest's selection ran 1 of 12 prompts of alpha10 and 1 of 12 prompts of baseline; "
        "run without -k/-m/--deselect/--lf to decide it"
    )
    assert data["selection"]["undecided"] == [{"kind": "gate", "name": f"fail if {fail_if}", "config": "alpha10", "reason": reason}]
    assert "partial selection: pytest's selection (-k/-m/--deselect/--lf) ran 8 of 96 cases" in out
    assert "gates: 0 passed, 0 failed, 1 not decided" in out and f"  SKIP  alpha10: fail if {fail_if}: {reason}" in out
    assert "PASS" not in out and "FAIL" not in out
    if sequential:
        assert "sequential replay: none: the runs ran only part of their cases" in out and data.get("sequential") is None


def test_merge_of_a_last_failed_run_decides_only_the_configs_it_ran_in_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = make_records()
    kept = [r for r in records if r["config"] == "baseline" or (r["config"] == "alpha10" and r["key"] in ("p003", "p005"))]
    run = _partial(tmp_path / "lf", records, kept)  # --lf: the baseline's failures were every case, alpha10's two prompts
    on_baseline, delta, unselected = (
        "baseline: strict_prompt_accuracy >= 0.99",
        "alpha=10: quality - baseline < -5",
        "alpha=5: quality > -9",
    )
    code = main(["merge", str(tmp_path / "m"), str(run), "--gate", on_baseline, "--gate", unselected, "--fail-if", delta])
    assert code == 1  # the one decided check fails
    data = json.loads((tmp_path / "m" / "results.json").read_text())
    assert [(g["gate"], g["config"], g["passed"]) for g in data["gates"]] == [(on_baseline, "baseline", False)]
    assert [(c["name"], c["config"]) for c in data["selection"]["undecided"]] == [(f"fail if {delta}", "alpha10"), (unselected, "alpha5")]
    assert "none of the 12 prompts of alpha5" in data["selection"]["undecided"][1]["reason"]
    assert "gates: 0 passed, 1 failed, 2 not decided" in capsys.readouterr().out


def test_merge_adds_up_what_the_runs_selected(tmp_path: Path) -> None:
    records = make_records()
    gate = "strict_prompt_accuracy >= 0.05"
    first = _partial(tmp_path / "a", records, [r for r in records if r["key"] == "p001"])
    rest = _partial(tmp_path / "b", records, [r for r in records if r["key"] != "p001"])
    assert main(["merge", str(tmp_path / "whole"), str(first), str(rest), "--gate", gate, "--max-errors", "1"]) == 0
    data = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert data["selection"]["partial"] is False and data["selection"]["cases_selected"] == data["selection"]["cases_collected"] == 96
    assert len(data["gates"]) == 4 and data["selection"]["undecided"] == []  # together the runs ran every case: decided

    shards = []
    for index, path in enumerate(_shards(tmp_path, records)):
        half = [r for r in records if int(r["key"][1:]) % 2 == index]
        kept = [r for r in half if not (index == 1 and r["key"] == "p003" and r["config"] == "alpha10")]  # --deselect in one shard
        saved = json.loads((path / "results.json").read_text())
        shards.append(_partial(tmp_path / f"partial{index}", half, kept, run=saved["run"]))
    assert main(["merge", str(tmp_path / "sharded"), *map(str, shards), "--gate", gate, "--max-errors", "1"]) == 0
    selection = json.loads((tmp_path / "sharded" / "results.json").read_text())["selection"]
    assert selection["partial"] is True and (selection["cases_selected"], selection["cases_collected"]) == (94, 96)
    assert selection["configs"]["alpha10"] == {"cases_selected": 22, "cases_collected": 24, "prompts_selected": 11, "prompts_collected": 12}
    assert [c["config"] for c in selection["undecided"]] == ["alpha10"]


def _stopped(location: Path, used: int, total: int, by_config: dict[str, int] | None = None) -> Path:
    """The saved report at ``location`` as a --steer-sequential run whose looks stopped after ``used`` of ``total`` prompts."""
    data = json.loads((location / "results.json").read_text())
    look = {"look": 2, "prompts_used": used, "shown": [], "shown_not": [], "open": [], "stopped": []}
    data["sequential"] = {
        "prompts_used": used, "prompts_by_config": by_config or {}, "prompts_total": total, "block_size": 2, "share": 0.2,
        "quality_clip": 1.0, "looks": [{**look, "look": 1, "prompts_used": 2}, look],
    }  # fmt: skip
    (location / "results.json").write_text(json.dumps(data))
    return location


@pytest.mark.parametrize("sequential", [[], ["--sequential"]], ids=["fixed", "sequential"])
def test_merge_refuses_sequential_shards_that_stopped_early(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sequential: list[str]
) -> None:
    first, second = (_stopped(path, 4, 6) for path in _shards(tmp_path, make_records()))
    fail_if = "alpha=10: strict_prompt_accuracy - baseline < 0"
    assert main(["merge", str(tmp_path / "m"), str(first), str(second), "--fail-if", fail_if, *sequential]) == 2
    err = capsys.readouterr().err
    for path in (first, second):
        assert f"{path / 'results.json'}: its --steer-sequential looks stopped generation early: it generated 4 of its 6 prompts" in err
    assert "neither a fixed sample" in err and "with or without --sequential" in err
    assert "rerun the shards without --steer-sequential" in err and "run the evaluation sequentially in one run" in err
    assert not (tmp_path / "m").exists()


def test_merge_takes_sequential_shards_that_ran_every_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _shards(tmp_path, make_records())
    _stopped(first, 6, 6)
    _stopped(second, 6, 6)  # every look left a check open: every prompt was generated, as in a fixed run
    assert main(["merge", str(tmp_path / "m"), str(first), str(second), "--max-errors", "1"]) == 0
    _stopped(second, 6, 6, by_config={"alpha10": 2})  # but one config stopped on its own after two prompts
    assert main(["merge", str(tmp_path / "m2"), str(first), str(second)]) == 2
    assert "it generated 6 of its 6 prompts (look 2, blocks of 2), alpha10 2 of them" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda r: r | {"instruction_id_list": None}, "field 'instruction_id_list' is null; expected a list of strings"),
        (lambda r: r | {"trial": "zero"}, "field 'trial' is \"zero\"; expected an integer"),
        (lambda r: r | {"config": 5}, "field 'config' is 5; expected a string"),
        (lambda r: r | {"alpha": True}, "field 'alpha' is true; expected a number or null"),
        (lambda r: r | {"strict": [True, "yes"]}, "field 'strict' is [true, \"yes\"]; expected a list of booleans"),
        (lambda r: {k: v for k, v in r.items() if k != "loose"}, "field 'loose' is missing; expected a list of booleans"),
        (lambda r: r | {"strict": r["strict"] + [True]}, "expected one per instruction of 'instruction_id_list'"),
        (lambda r: [r], "a JSON list, not an object"),
        (lambda r: '{"key": "p000", ', "not valid JSON"),
        (lambda r: b"\xff\xfe", "not UTF-8 text"),
    ],
    ids=["null-list", "string-trial", "number-config", "bool-alpha", "bad-verdict", "missing", "verdict-count", "array", "json", "utf8"],
)
@pytest.mark.parametrize("command", ["merge", "report"])
def test_a_malformed_case_line_exits_2_naming_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], corrupt, problem: str, command: str
) -> None:
    first, second = _shards(tmp_path, make_records())
    path = second / "cases.jsonl"
    lines = path.read_bytes().splitlines()
    bad = corrupt(json.loads(lines[1]))
    lines[1] = bad if isinstance(bad, bytes) else (bad if isinstance(bad, str) else json.dumps(bad)).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    args = ["merge", str(tmp_path / "m"), str(first), str(second)] if command == "merge" else ["report", str(second)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:2: ") and problem in err, err


@pytest.mark.parametrize("command", ["merge", "report"])
def test_a_malformed_case_of_a_standalone_results_json_names_its_index_and_field(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _shards(tmp_path, make_records())
    data = json.loads((first / "results.json").read_text())
    data["run"]["shard"] = None
    data["cases"] = [json.loads(line) for line in (first / "cases.jsonl").read_text().splitlines()]
    data["cases"][3]["n_new_tokens"] = 4.5
    path = tmp_path / "standalone.json"
    path.write_text(json.dumps(data))
    args = ["merge", str(tmp_path / "m"), str(path)] if command == "merge" else ["report", str(path), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert f"error: {path}: cases[3] is not a case record: field 'n_new_tokens' is 4.5; expected an integer" in capsys.readouterr().err


def test_version_names_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"pytest-steer {metadata.version('pytest-steer')}\n"

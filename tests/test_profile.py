"""Head profiling: the elimination rule, the ranking, and ``python -m pytest_steer profile`` on a tiny model,
whose head set ``--steer-heads FILE`` reads back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_steer.__main__ import main
from pytest_steer.stats.profile import Lift, ranked, survivors
from pytest_steer.steering.errors import HeadConfigError
from pytest_steer.steering.pasta.heads import parse_heads


def lift(name: str, estimate: float, low: float, high: float) -> Lift:
    return Lift(name, estimate, low, high, 10)


def test_a_candidate_is_dropped_once_its_upper_bound_is_below_the_kth_best_lower_bound() -> None:
    found = {
        "a": lift("a", 0.5, 0.4, 0.6),
        "b": lift("b", 0.3, 0.2, 0.4),
        "c": lift("c", 0.0, -0.1, 0.19),  # below b's lower bound: out of the top 2
        "d": lift("d", 0.1, -0.2, 0.25),  # overlaps b: kept
    }
    assert survivors(found, ["a", "b", "c", "d"], k=2) == ["a", "b", "d"]
    assert survivors(found, ["a", "b", "c", "d"], k=3) == ["a", "b", "c", "d"]  # the 3rd lower bound, -0.1, drops none
    assert survivors(found, ["a", "c"], k=2) == ["a", "c"]  # no more than k left: nothing to drop


def test_ranking_is_by_estimate_with_undefined_lifts_last() -> None:
    found = {"a": lift("a", 0.1, 0, 0.2), "b": Lift("b", None, None, None, 0), "c": lift("c", 0.3, 0.1, 0.5), "d": lift("d", 0.1, 0, 0.2)}
    assert ranked(found, ["a", "b", "c", "d"]) == ["c", "a", "d", "b"]


def test_a_head_file_reads_as_its_json(tmp_path: Path) -> None:
    path = tmp_path / "heads.json"
    path.write_text('{"1": [0, 3], "0": [2]}\n')
    assert parse_heads(str(path), 2) == parse_heads('{"1": [0, 3], "0": [2]}', 2) == {1: [0, 3], 0: [2]}
    with pytest.raises(HeadConfigError, match="names no file"):
        parse_heads(str(tmp_path / "missing.json"))
    with pytest.raises(HeadConfigError, match="layer 5"):
        (tmp_path / "deep.json").write_text('{"5": [0]}')
        parse_heads(str(tmp_path / "deep.json"), 2)


def test_profile_writes_a_head_set_that_a_run_steers_with(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile"
    steer = ["--steer-model", str(tiny_checkpoint), "--steer-max-new-tokens", "3", "--steer-dtype", "float32",
             "--steer-cache-dir", str(tmp_path / "cache")]  # fmt: skip
    code = main(["profile", str(out), "--limit", "8", "--block", "4", "--layers", "1", "--top-k", "2", "--candidates", "0-1", "--", *steer])
    assert code == 0
    printed = capsys.readouterr().out
    assert "profiled 2 layers and 4 heads on 4 prompts" in printed
    profile = json.loads((out / "results.json").read_text())["profile"]
    heads = json.loads((out / "heads.json").read_text())
    assert heads == profile["heads"] and sum(len(h) for h in heads.values()) == 2
    layers, stage = profile["stages"]
    assert [c["heads"] for c in layers["candidates"]] == ["0", "1"]
    assert len(stage["candidates"]) == 4 and {next(iter(json.loads(c["heads"]))) for c in stage["candidates"]} == set(heads)
    selection, evaluation = set(profile["selection_prompts"]), set(profile["evaluation_prompts"])
    assert len(selection) == len(evaluation) == 4 and not selection & evaluation
    written = [json.loads(line)["key"] for line in (out / "evaluation.jsonl").read_text().splitlines()]
    assert set(written) == evaluation
    assert (out / "profile.png").stat().st_size > 0

    report = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(out / "suite" / "test_profile.py"), "-q", "-p", "no:cacheprovider",
         "--steer-dataset", str(out / "evaluation.jsonl"), "--steer-alpha", "10", "--steer-heads", str(out / "heads.json"),
         "--steer-report-dir", str(report), "--steer-quality", "none", *steer],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    steering = json.loads((report / "results.json").read_text())["run"]["steering"]
    assert steering["pasta_alpha10"]["params"]["heads"] == str(out / "heads.json")
    records = [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines()]
    assert {r["key"] for r in records} == evaluation and {r["config"] for r in records} == {"baseline", "pasta_alpha10"}

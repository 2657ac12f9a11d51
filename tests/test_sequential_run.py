"""--steer-sequential in a run: blocks in order, a look after each, the cases after the stop skipped, and the
same stop and verdicts as replaying the fixed run with ``merge --sequential``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_steer.__main__ import main
from pytest_steer.stats.eprocess import prompt_blocks

GATE = "emphasis: strict_prompt_accuracy - baseline > -2"  # shown on the first prompts: a delta is never below -1
FAIL_IF = "emphasis: strict_prompt_accuracy - baseline < -0.95"  # shown not (futility) once a few prompts are in
TEST = "def test_case(steer_case):\n    pass\n\ndef test_again(steer_case):\n    pass\n"


def run(pytester: pytest.Pytester, checkpoint: Path, report: Path, *extra: str) -> pytest.RunResult:
    pytester.makepyfile(test_steer=TEST)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--steer-model", str(checkpoint), "--steer-limit", "12", "--steer-max-new-tokens", "3",
        "--steer-method", "emphasis", "--steer-quality", "none", "--steer-no-cache", "--steer-min-prompts", "2",
        "--steer-gate", GATE, "--steer-fail-if", FAIL_IF, "--steer-report-dir", str(report),
        "--steer-dtype", "float32",  # dtype auto measures each run, and two runs (shards) under load may decide apart
        *extra,
    )  # fmt: skip


def test_a_sequential_run_stops_where_its_replay_stops(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    live = run(
        pytester, tiny_checkpoint, tmp_path / "live", "--steer-sequential", "--steer-sequential-block", "2",
        "--junitxml", str(tmp_path / "junit.xml"),
    )  # fmt: skip
    assert live.ret == 0, live.stdout.str()
    live_data = json.loads((tmp_path / "live" / "results.json").read_text())
    sequential = live_data["sequential"]
    used, total = sequential["prompts_used"], sequential["prompts_total"]
    assert total == 12 and used < total and sequential["looks"][-1]["open"] == []
    outcomes = live.parseoutcomes()
    assert outcomes["skipped"] == 2 * 2 * (total - used)  # two tests per case, two configs per prompt
    assert outcomes.get("passed", 0) + outcomes.get("missed", 0) == 2 * 2 * used + 2  # and the two checks' verdicts
    live.stdout.fnmatch_lines([f"*decided after {used} of 12 prompts: look {len(sequential['looks'])} left no gate or fail-if open*"])
    live.stdout.fnmatch_lines([f"sequential: every gate and fail-if was decided at look *on {used} of 12 prompts*"])

    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<skipped") == outcomes["skipped"] and f"decided after {used} of 12 prompts" in junit

    fixed = run(pytester, tiny_checkpoint, tmp_path / "fixed")
    assert fixed.ret == 0, fixed.stdout.str()
    order = [key for block in prompt_blocks(sorted(case_keys(tmp_path / "fixed")), 2, seed=0) for key in block]
    assert case_keys(tmp_path / "live") == set(order[:used])  # the first blocks of the seeded order, nothing else
    code = main([
        "merge", str(tmp_path / "replay"), str(tmp_path / "fixed"), "--gate", GATE, "--fail-if", FAIL_IF, "--min-prompts", "2",
        "--sequential", "--sequential-block", "2",
    ])  # fmt: skip
    assert code == 0
    replayed = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert replayed["sequential"] == sequential
    assert [gate["message"] for gate in replayed["gates"]] == [gate["message"] for gate in live_data["gates"]]
    assert case_keys(tmp_path / "replay") == case_keys(tmp_path / "live")


def test_the_default_block_fills_one_batch(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    # batches of 20 rows, 2 configs x 1 trial: 10 prompts per block, and no batch spans two blocks
    live = run(pytester, tiny_checkpoint, tmp_path / "live", "--steer-sequential", "--steer-batch-size", "20")
    assert live.ret == 0, live.stdout.str()
    sequential = json.loads((tmp_path / "live" / "results.json").read_text())["sequential"]
    assert sequential["block_size"] == 10
    assert sequential["prompts_used"] in (10, 12)  # a look after 10 prompts, then after the last 2
    fixed = run(pytester, tiny_checkpoint, tmp_path / "fixed")
    assert fixed.ret == 0, fixed.stdout.str()
    code = main([
        "merge", str(tmp_path / "replay"), str(tmp_path / "fixed"), "--gate", GATE, "--fail-if", FAIL_IF, "--min-prompts", "2",
        "--sequential", "--sequential-block", "10",
    ])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "replay" / "results.json").read_text())["sequential"] == sequential


def case_keys(report: Path) -> set[str]:
    return {json.loads(line)["key"] for line in (report / "cases.jsonl").read_text().splitlines() if line.strip()}


def test_sequential_needs_a_check(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    pytester.makepyfile(test_steer=TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-sequential")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--steer-sequential stops generating once every gate and fail-if is decided, and this run has none*"])


def test_a_sequential_run_under_xdist_takes_the_serial_runs_looks(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    args = ["--steer-sequential", "--steer-sequential-block", "2"]  # run() pins float32 (bfloat16 rounds thread counts apart)
    serial = run(pytester, tiny_checkpoint, tmp_path / "serial", *args)
    parallel = run(pytester, tiny_checkpoint, tmp_path / "xdist", *args, "-n", "2")
    assert serial.ret == 0, serial.stdout.str()
    assert parallel.ret == 0, parallel.stdout.str()
    serial_data = json.loads((tmp_path / "serial" / "results.json").read_text())
    parallel_data = json.loads((tmp_path / "xdist" / "results.json").read_text())
    used = serial_data["sequential"]["prompts_used"]
    assert used < 12 and parallel_data["sequential"] == serial_data["sequential"]
    assert [g["message"] for g in parallel_data["gates"]] == [g["message"] for g in serial_data["gates"]]
    assert responses(tmp_path / "xdist") == responses(tmp_path / "serial")
    assert parallel.parseoutcomes() == serial.parseoutcomes()
    assert len({line["worker"] for line in cases(tmp_path / "xdist")}) == 2  # both workers generated
    parallel.stdout.fnmatch_lines([f"*decided after {used} of 12 prompts*"])


def cases(report: Path) -> list[dict]:
    return [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines() if line.strip()]


def responses(report: Path) -> dict[tuple[str, str, int], str]:
    return {(c["key"], c["config"], c["trial"]): c["response"] for c in cases(report)}


def test_sequential_under_xdist_needs_the_load_distribution(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    pytester.makepyfile(test_steer=TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-sequential", "--steer-gate", GATE,
        "-n", "2", "--dist", "loadfile",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-sequential hands out the blocks in order under --dist load*not --dist loadfile*"])


def test_a_crashed_worker_halts_the_looks_and_the_run_ends(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        crash_once="""
        import os
        from pathlib import Path

        def pytest_runtest_setup(item):  # a worker's first case, before its batch is generated: the other waits for its records
            try:  # one crash in the whole run, whichever worker comes first
                marker = os.open(os.environ["STEER_TEST_CRASHED"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(marker, item.nodeid.encode())
            os.close(marker)
            os._exit(1)
        """
    )
    monkeypatch.setenv("STEER_TEST_CRASHED", str(tmp_path / "crashed"))
    pytester.makepyfile(test_steer=TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "crash_once", "-rs", "--steer-model", str(tiny_checkpoint), "--steer-limit", "12",
        "--steer-max-new-tokens", "3", "--steer-method", "emphasis", "--steer-quality", "none", "--steer-no-cache",
        "--steer-min-prompts", "2", "--steer-fail-if", "emphasis: strict_prompt_accuracy - baseline < 0",
        "--steer-sequential", "--steer-sequential-block", "2", "--steer-report-dir", str(tmp_path / "report"), "-n", "2",
        timeout=600,
    )  # fmt: skip
    crashed = (tmp_path / "crashed").read_text().split("::")[-1]
    result.stdout.fnmatch_lines(
        [f"*crashed while running *{crashed}*", "*not generated: the sequential looks stopped after * blocks*went down*"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data["sequential"]["looks"][-1]["open"]  # A/A-like deltas against 0: no look decides
    ran = [c for c in cases(tmp_path / "report") if not c["error"]]
    lost = [c for c in cases(tmp_path / "report") if c["error"]]
    assert {c["config"] for c in ran} == {"baseline", "emphasis"}  # what ran is kept
    assert lost and all("lost: not run: the sequential looks halted (worker gw" in c["error"] for c in lost)
    assert len(ran) + len(lost) == 24 and not data["gates"][0]["passed"]  # lost cases are errors, over the default budget


def test_a_killed_worker_loses_no_record_it_shared(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed as the second case of its first batch sets up: that case was generated with the batch and shared
    for the looks, but no test reports it. It keeps its record; every response in the cache is in the report, and
    only cases never generated are lost. Whichever worker first sets up its second case is killed, once."""
    pytester.makepyfile(
        kill_once="""
        import os
        import signal

        setups = 0
        is_worker = False

        def pytest_configure(config):
            global is_worker  # not PYTEST_XDIST_WORKER: this run's controller inherits it when the tests run under xdist
            is_worker = hasattr(config, "workerinput")

        def pytest_runtest_logreport(report):
            global setups
            if report.when != "setup" or not is_worker:
                return
            setups += 1
            if setups == 2:
                try:  # one kill in the whole run, whichever worker comes first
                    marker = os.open(os.environ["STEER_TEST_KILLED"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return
                os.write(marker, b"killed")
                os.close(marker)
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    monkeypatch.setenv("STEER_TEST_KILLED", str(tmp_path / "killed"))
    pytester.makepyfile(test_steer="def test_case(steer_case):\n    pass\n")
    cache, report = tmp_path / "cache", tmp_path / "report"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "kill_once", "--steer-model", str(tiny_checkpoint), "--steer-limit", "8",
        "--steer-max-new-tokens", "4", "--steer-alpha", "10", "--steer-min-prompts", "2", "--steer-cache-dir", str(cache),
        "--steer-fail-if", "strict_prompt_accuracy - baseline < -0.5", "--steer-sequential", "--steer-sequential-block", "2",
        "--steer-report-dir", str(report), "-n", "2",
        timeout=600,
    )  # fmt: skip
    crashed = re.search(r"worker 'gw\d+' crashed while running '[^']*(test_case\[.*\])'", result.stdout.str())
    assert crashed is not None and (tmp_path / "killed").read_text() == "killed", result.stdout.str()
    ran = [c for c in cases(report) if not c["error"]]
    assert any(c["nodeid"].endswith(crashed[1]) for c in ran)  # generated and shared before the kill: kept, not lost
    assert len(ran) == len(list((cache / "generation").rglob("*.json")))  # every response generated is in the report
    assert all(c["error"].startswith("lost: not run: ") for c in cases(report) if c["error"])  # only never generated
    result.stdout.fnmatch_lines(["*generated case(s) were reported by no test; this report keeps their records*"])


def test_a_config_whose_checks_are_decided_stops_before_the_run(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    decided = "emphasis: strict_prompt_accuracy - baseline < -2"  # shown not at the first look
    still_open = "pasta_alpha10: strict_prompt_accuracy - baseline < 0"  # its deltas are 0: open until the budget
    runs = {}
    for name, extra in (("serial", ()), ("xdist", ("-n", "2"))):
        pytester.makepyfile(test_steer=TEST)
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-rs", "--steer-model", str(tiny_checkpoint), "--steer-limit", "12",
            "--steer-max-new-tokens", "3", "--steer-method", "emphasis", "--steer-alpha", "10", "--steer-quality", "none",
            "--steer-no-cache", "--steer-min-prompts", "2", "--steer-fail-if", decided, "--steer-fail-if", still_open,
            "--steer-sequential", "--steer-sequential-block", "2", "--steer-report-dir", str(tmp_path / name), *extra,
            "--steer-dtype", "float32",  # bfloat16 rounds the workers' and the serial run's thread counts apart
        )  # fmt: skip
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines([
            "sequential: *; emphasis stopped after 2 prompts, its checks decided",
            "*decided after 2 of 12 prompts: look 1 left no gate or fail-if on emphasis open*",
        ])  # fmt: skip
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    sequential = runs["serial"]["sequential"]
    assert sequential["prompts_by_config"] == {"emphasis": 2} and sequential["prompts_used"] > 2
    ran = {config: {c["key"] for c in cases(tmp_path / "serial") if c["config"] == config} for config in ("baseline", "emphasis")}
    assert len(ran["emphasis"]) == 2 and len(ran["baseline"]) == sequential["prompts_used"]
    assert runs["xdist"]["sequential"] == sequential and responses(tmp_path / "xdist") == responses(tmp_path / "serial")


def test_a_run_stopped_by_maxfail_under_xdist_ends(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytester.makepyfile(test_steer="def test_case(steer_case):\n    assert steer_case.record.trial < 0, 'every case fails'\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-limit", "12", "--steer-max-new-tokens", "3",
        "--steer-method", "emphasis", "--steer-quality", "none", "--steer-no-cache", "--steer-min-prompts", "2",
        "--steer-fail-if", "emphasis: strict_prompt_accuracy - baseline < 0", "--steer-sequential", "--steer-sequential-block", "2",
        "--steer-report-dir", str(tmp_path / "report"), "-n", "2", "-x",
        timeout=600,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.INTERRUPTED  # xdist's -x, and no worker left waiting for records
    result.stdout.fnmatch_lines(["partial run: the run ended early (stopped after * by -x/--maxfail) and ran * of 24 cases*"])
    assert "did not report" not in result.stdout.str()  # a case the stop left out is not run, never lost
    assert json.loads((tmp_path / "report" / "results.json").read_text())["n_lost"] == 0


def test_a_partial_selection_takes_no_look_and_its_merge_keeps_it_partial(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    on_baseline = "baseline: strict_prompt_accuracy >= 0"  # the baseline runs in full: decided
    result = run(
        pytester, tiny_checkpoint, tmp_path / "k", "--steer-sequential", "--steer-sequential-block", "2", "--steer-gate", on_baseline,
        "-k", "baseline or s001 or s002 or s003",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    output = result.stdout.str()
    assert "sequential: every gate and fail-if was decided" not in output  # no look stopped anything
    result.stdout.fnmatch_lines([
        "*note: --steer-sequential took no look: pytest's selection (-k/-m/--deselect/--lf) ran part of the cases*",
        "gates: 1 passed, 0 failed, 2 not decided",
        "  PASS  baseline: strict_prompt_accuracy = * (12 prompts)*",
    ])  # fmt: skip
    data = json.loads((tmp_path / "k" / "results.json").read_text())
    assert data.get("sequential") is None and data["selection"]["partial"] is True
    assert len(cases(tmp_path / "k")) == 12 + 3  # every selected case ran

    code = main([
        "merge", str(tmp_path / "merged"), str(tmp_path / "k"), "--gate", GATE, "--gate", on_baseline, "--fail-if", FAIL_IF,
        "--min-prompts", "2", "--sequential", "--sequential-block", "2",
    ])  # fmt: skip
    assert code == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["selection"] == data["selection"]  # the same checks, undecided for the same reasons
    assert [gate["message"] for gate in merged["gates"]] == [gate["message"] for gate in data["gates"]]


def test_sequential_shards_that_stopped_early_are_not_merged(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = [tmp_path / f"shard{index}" for index in (1, 2)]
    for index, report in enumerate(shards, start=1):
        result = run(
            pytester, tiny_checkpoint, report, "--steer-sequential", "--steer-sequential-block", "2", "--steer-shard", f"{index}/2"
        )
        assert result.ret == 0, result.stdout.str()
        sequential = json.loads((report / "results.json").read_text())["sequential"]
        assert sequential["prompts_used"] < sequential["prompts_total"] == 6
    assert main(["merge", str(tmp_path / "merged"), *map(str, shards), "--fail-if", FAIL_IF, "--min-prompts", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot merge runs that stopped early:")
    assert all(
        f"{report / 'results.json'}: its --steer-sequential looks stopped generation early: it generated " in err for report in shards
    )
    assert not (tmp_path / "merged").exists()

"""The plan of a run: node ids to cases, the plan line, throughput kept for the next estimate, the overall count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_steer.plan.cases import build_cases, steering_configs
from pytest_steer.plan.collection import Plan
from pytest_steer.plan.data import PromptRow
from pytest_steer.plan.estimate import THROUGHPUT_FILE, RunPlan, Throughput, format_duration, read_throughput, record_throughput
from pytest_steer.run.scheduling import work_unit

MODEL = {"name": "tiny", "revision": "sha256:abc", "dtype": "float32", "attn_implementation": "eager"}


def make_plan(keys: tuple[str, ...] = ("s001", "a-b"), trials: int = 2) -> Plan:
    rows = [PromptRow(key, f"Prompt {key}.", (), ("punctuation:no_comma",), ({},)) for key in keys]
    configs = tuple(steering_configs([10.0]))
    cases = build_cases(rows, configs, trials=trials, seed=0, highlight="prompt")
    batches = {config.name: [[case.id for case in cases if case.config == config]] for config in configs}
    return Plan(configs, cases, batches)


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("suites/ifeval/test_ifeval.py::test_follows_instructions[s001-baseline-t0]", "s001-baseline-t0"),
        ("test_mine.py::test_p[1-s001-pasta_alpha10-t1]", "s001-pasta_alpha10-t1"),  # another parametrization first
        ("test_mine.py::test_p[s001-pasta_alpha10-t1-x-y]", "s001-pasta_alpha10-t1"),  # or after
        ("test_mine.py::TestClass::test_q[a-b-baseline-t1]", "a-b-baseline-t1"),  # a prompt key that holds "-"
        ("test_mine.py::test_p[2-a-b-pasta_alpha10-t0]", "a-b-pasta_alpha10-t0"),
        ("test_mine.py::test_plain", None),
        ("test_mine.py::test_other[s001-baseline-t7]", None),  # no such trial in the plan
    ],
    ids=["suite", "other-first", "other-after", "dashed-key", "dashed-key-other-first", "plain", "unknown-trial"],  # ids of no case
)
def test_a_node_id_names_its_case_whatever_else_parametrizes_the_test(nodeid: str, expected: str | None) -> None:
    assert make_plan().case_id_of(nodeid) == expected


def test_every_test_of_a_case_shares_the_batch_unit_under_xdist() -> None:
    plan = make_plan()
    units = plan.work_units()
    unit_of = lambda nodeid: units.get(plan.case_id_of(nodeid) or "")  # noqa: E731  (as SteerSession.work_units builds it)
    a = work_unit("t.py::test_a[s001-baseline-t0]", unit_of)
    b = work_unit("t.py::test_b[3-s001-baseline-t0]", unit_of)
    assert a == b == "steer-batch[baseline#0]"
    assert work_unit("t.py::test_a[s001-pasta_alpha10-t0]", unit_of) == "steer-batch[pasta_alpha10#0]"
    assert work_unit("t.py::test_plain", unit_of) == "t.py::test_plain"
    assert work_unit("t.py::test_a[s001-baseline-t0]", None) == "t.py::test_a[s001-baseline-t0]"


def test_the_plan_line_says_what_the_run_does_and_costs() -> None:
    plan = RunPlan(prompts=99, configs=3, trials=1, collected=297, selected=297, cached=97, max_new_tokens=64, throughput=None)
    assert plan.to_generate == 200
    assert plan.line() == (
        "plan: 99 prompts × 3 configs × 1 trial = 297 cases; 200 to generate (97 in the response cache) × up to 64 new tokens "
        "= 12,800 tokens at most; no estimate yet (a run of this model on this device measures its throughput)"
    )
    measured = Throughput(tokens_per_s=100.0, fill=0.5, device="cpu", dtype="float32")
    partial = RunPlan(
        prompts=99, configs=3, trials=2, collected=594, selected=8, cached=None, max_new_tokens=64, throughput=measured, workers=2
    )
    # 8 generations × 64 tokens × half of them used / 100 tokens/s / 2 workers
    assert partial.estimate() == pytest.approx(8 * 64 * 0.5 / 100 / 2)
    line = partial.line()
    assert "× 2 trials = 594 cases, 8 selected; 8 to generate (no response cache)" in line
    assert "estimate about 1 s on 2 workers (earlier run: 100 tokens/s on cpu float32, responses 50% of max length)" in line
    cached = RunPlan(prompts=2, configs=1, trials=1, collected=2, selected=2, cached=2, max_new_tokens=8, throughput=measured)
    assert cached.line().endswith("; nothing to generate")


def test_throughput_is_kept_per_model_and_device_for_the_next_estimate(tmp_path: Path) -> None:
    assert read_throughput(tmp_path, MODEL, "cpu") is None
    record_throughput(tmp_path, MODEL, "cpu", tokens=300, cases=10, max_new_tokens=60, seconds=3.0)
    found = read_throughput(tmp_path, MODEL, "cpu")
    assert found == Throughput(tokens_per_s=100.0, fill=0.5, device="cpu", dtype="float32")
    assert read_throughput(tmp_path, MODEL, "cuda") is None  # another device kind
    assert read_throughput(tmp_path, {**MODEL, "dtype": "bfloat16"}, "cpu") is None
    record_throughput(tmp_path, MODEL, "cuda", tokens=1000, cases=10, max_new_tokens=100, seconds=1.0)
    assert read_throughput(tmp_path, MODEL, "cpu") == found  # one entry per model and device
    assert read_throughput(None, MODEL, "cpu") is None  # no response cache: no estimate


def test_a_throughput_file_that_is_not_ours_gives_no_estimate(tmp_path: Path) -> None:
    (tmp_path / THROUGHPUT_FILE).write_text("[1, 2]")
    assert read_throughput(tmp_path, MODEL, "cpu") is None
    record_throughput(tmp_path, MODEL, "cpu", tokens=10, cases=1, max_new_tokens=10, seconds=1.0)  # replaces it
    assert json.loads((tmp_path / THROUGHPUT_FILE).read_text())
    assert read_throughput(tmp_path, MODEL, "cpu") is not None


@pytest.mark.parametrize(("seconds", "text"), [(4.4, "4 s"), (61, "1 min 01 s"), (3600 * 2 + 60 * 5, "2 h 05 min")])
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_progress_lines_carry_the_overall_count_and_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_steer.run import progress as progress_module
    from pytest_steer.run.progress import Progress

    written: list[str] = []
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    config = type("Config", (), {})()  # a plain run: no workerinput
    progress = Progress(config)  # type: ignore[arg-type]
    monkeypatch.setattr(progress, "write", written.append)
    progress.start(total=10, to_generate=8)
    progress("loaded tiny")  # no cases: no count
    now[0] = 104.0
    progress("baseline: batch 1/3", cases=4, generated=2)  # 2 generated in 4 s: 6 left, 12 s
    progress(None, cases=2)  # from the cache: counted, not written
    now[0] = 110.0
    progress("pasta: batch 1/2", cases=4, generated=4)  # 6 generated in 10 s: 2 left, 3 s
    assert written == [
        "loaded tiny",
        "baseline: batch 1/3; run 4/10 cases, ETA 12 s",
        "pasta: batch 1/2; run 10/10 cases, ETA 3 s",
    ]


def test_configs_that_can_share_batches_fill_them_together_and_the_others_keep_their_own() -> None:
    from pytest_steer.plan.collection import plan_batches
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.steering.method import SteeringMethod
    from pytest_steer.steering.registry import method_registry

    class WholeBatches(SteeringMethod):  # steers the model, without steer_together
        name = "whole"

        def steer(self, batch):  # type: ignore[override]
            return super().steer(batch)

    rows = [PromptRow(f"s{i:03d}", "x" * i, (), ("punctuation:no_comma",), ({},)) for i in range(1, 6)]
    configs = steering_configs([10.0], [("emphasis", {}), ("whole", {})])
    cases = build_cases(rows, configs, trials=1, seed=0, highlight="prompt")
    lengths = {row.key: len(row.prompt) for row in rows}
    methods = {**method_registry(), "whole": WholeBatches}
    batches = plan_batches(cases, lengths, SteerSettings(batch_size=4), methods=methods)
    assert list(batches) == ["baseline+pasta_alpha10+emphasis", "whole"]
    shared = batches["baseline+pasta_alpha10+emphasis"]
    assert [len(batch) for batch in shared] == [4, 4, 4, 3]  # 15 rows of three configs: full batches, one tail
    assert {case.split("-")[1] for case in shared[0]} == {"baseline", "pasta_alpha10", "emphasis"}  # longest prompts first
    assert [len(batch) for batch in batches["whole"]] == [4, 1]
    blocks = (("s001", "s002"), ("s003", "s004", "s005"))  # sequential: no batch spans two blocks
    by_block = plan_batches(cases, lengths, SteerSettings(batch_size=64), blocks, methods)
    assert [len(batch) for batch in by_block["baseline+pasta_alpha10+emphasis"]] == [6, 9]
